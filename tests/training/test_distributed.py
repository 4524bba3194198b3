"""Actor and learner in separate processes over 127.0.0.1: loopback, learner restart, actor crash, deadlines."""
import json
import multiprocessing as mp
import os
import signal
import socket
import time
from functools import partial

import pytest
import torch
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs import GymEnv
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal

from torchrl_serl.training.distributed import ActorLink, LearnerLink, LinkError, RemoteActor

make_env = partial(GymEnv, "Pendulum-v1")
CTX = mp.get_context("spawn")


def make_policy() -> ProbabilisticActor:
    net = nn.Sequential(MLP(in_features=3, out_features=2, num_cells=[32, 32]), NormalParamExtractor())
    module = TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        module, in_keys=["loc", "scale"], distribution_class=TanhNormal,
        distribution_kwargs={"low": -2.0, "high": 2.0},
    )


def _write_json(path, obj):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def learner_main(port, stats_path, first_version):
    """A learner: pulls transitions into its buffer, takes Adam steps, publishes weights."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    link = LearnerLink("127.0.0.1", port, timeout_s=2.0)
    policy = make_policy()
    optim = torch.optim.Adam(policy.parameters(), lr=1e-3)
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100_000))
    version, received, versions_seen = first_version, 0, []
    link.publish_weights(policy, version)
    while True:
        for batch in link.pull():
            rb.extend(batch)
            received += batch.numel()
            versions_seen = sorted(set(versions_seen) | set(batch["next", "policy_version"].flatten().tolist()))
        if len(rb) >= 32:
            # a behaviour-cloning step stands in for the SAC update: it changes weights and optimizer state
            sample = rb.sample(32)
            loss = (policy.module[0](sample.select("observation"))["loc"] - sample["action"]).pow(2).mean()
            optim.zero_grad()
            loss.backward()
            optim.step()
            version += 1
            link.publish_weights(policy, version)
        _write_json(stats_path, {
            "received": received, "buffer": len(rb), "version": version, "versions_seen": versions_seen[-50:],
            "adam_steps": int(optim.state[next(iter(policy.parameters()))]["step"]) if optim.state else 0,
            "actor_seen": link.actor_seen_within(1.0), "session": link.session,
        })
        time.sleep(0.02)


def actor_main(port, stats_path):
    torch.set_num_threads(1)
    actor = RemoteActor(make_env, make_policy(), host="127.0.0.1", port=port, timeout_s=1.0,
                        reconnect_every_s=0.2, frames_per_batch=10, seed=0)
    actor.run(on_batch=lambda stats: _write_json(stats_path, stats) if stats["frames"] % 50 == 0 else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(path, predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = _read_json(path)
        if stats is not None and predicate(stats):
            return stats
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last stats: {_read_json(path)}")


@pytest.fixture
def procs():
    started = []

    def start(target, *args):
        p = CTX.Process(target=target, args=args, daemon=True)
        p.start()
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            if p.is_alive():
                p.kill()
            p.join(10)


@pytest.mark.slow
def test_learner_restart_and_actor_crash(procs, tmp_path):
    port = _free_port()
    learner_stats, actor_stats = tmp_path / "learner.json", tmp_path / "actor.json"
    learner = procs(learner_main, port, str(learner_stats), 0)
    actor = procs(actor_main, port, str(actor_stats))

    # loopback: transitions flow to the learner, its weights flow back (frames carry its versions)
    _wait(learner_stats, lambda s: s["received"] >= 200 and max(s["versions_seen"]) >= 1, 60,
          "transitions acted with the learner's weights")

    # learner restart: kill it, the actor keeps acting with its last weights
    learner.kill()
    learner.join(10)
    acted = _wait(actor_stats, lambda s: True, 5, "actor stats")["frames"]
    _wait(actor_stats, lambda s: s["frames"] >= acted + 200 and s["link_errors"] > 0, 30,
          "the actor to keep acting while the learner is down")
    assert actor.is_alive()
    # a new learner (new session, versions from 10_000) on the same port: the actor reconnects,
    # flushes what it collected meanwhile, and acts with the new learner's weights
    os.remove(learner_stats)
    learner = procs(learner_main, port, str(learner_stats), 10_000)
    stats = _wait(learner_stats, lambda s: max(s["versions_seen"], default=-1) > 10_000, 60,
                  "frames acted with the restarted learner's weights")
    assert stats["received"] >= 200  # the backlog kept while the learner was down arrived
    assert actor.is_alive()

    # actor crash: the learner keeps its buffer, optimizer and version, and serves a new actor
    actor.kill()
    actor.join(10)
    before = _wait(learner_stats, lambda s: not s["actor_seen"], 15, "the learner to notice the actor is gone")
    time.sleep(0.5)
    after = _read_json(learner_stats)
    assert learner.is_alive()
    assert after["session"] == before["session"]
    assert after["buffer"] == before["buffer"] == after["received"]
    assert after["adam_steps"] >= before["adam_steps"] > 0
    assert after["version"] >= before["version"] > 10_000
    procs(actor_main, port, str(actor_stats))
    _wait(learner_stats, lambda s: s["received"] >= after["received"] + 200 and s["actor_seen"]
          and s["adam_steps"] > after["adam_steps"], 60, "a new actor to feed the same learner")


def test_remote_actor_acts_with_the_learner_weights():
    port = _free_port()
    link = LearnerLink("127.0.0.1", port, timeout_s=2.0)
    learner_policy = make_policy()
    link.publish_weights(learner_policy, 7)
    actor = RemoteActor(make_env, make_policy(), host="127.0.0.1", port=port, timeout_s=2.0, seed=0)
    stats = actor.run(total_frames=300)
    data = torch.cat(link.pull())
    assert data.numel() == stats["frames"] == 300 and stats["weights_version"] == 7
    versions = data["next", "policy_version"].squeeze(-1)
    assert set(versions.tolist()) <= {-1, 7} and (versions == 7).sum() >= 200
    tagged = data[versions == 7]
    with torch.no_grad():
        # the actor acted with the published network, not its own initial one
        torch.testing.assert_close(tagged["loc"], learner_policy(tagged.select("observation").clone())["loc"])


def _serve(port, ready):
    link = LearnerLink("127.0.0.1", port, timeout_s=2.0)
    link.publish_weights(nn.Linear(2, 2), 1)
    ready.set()
    while True:
        time.sleep(1)


def test_every_call_has_a_deadline(procs):
    timeout_s = 1.0
    # nobody listening
    t = time.monotonic()
    with pytest.raises(LinkError, match="cannot reach learner"):
        ActorLink("127.0.0.1", _free_port(), timeout_s).connect()
    # generous upper bounds: without a deadline these calls would hang for good, and a busy CI
    # machine must not fail them by being slow
    assert time.monotonic() - t < 15 * timeout_s

    port, ready = _free_port(), CTX.Event()
    learner = procs(_serve, port, ready)
    assert ready.wait(30)
    link = ActorLink("127.0.0.1", port, timeout_s)
    assert link.weights_tag().endswith(":1")
    # a hung learner (stopped, socket open): the call gives up at its deadline
    os.kill(learner.pid, signal.SIGSTOP)
    try:
        t = time.monotonic()
        with pytest.raises(LinkError, match="weights_tag"):
            link.weights_tag()
        elapsed = time.monotonic() - t
        assert timeout_s * 0.5 < elapsed < 15 * timeout_s, elapsed
    finally:
        os.kill(learner.pid, signal.SIGCONT)
    # a dead learner: the call fails at once, reconnection fails within the deadline
    learner.kill()
    learner.join(10)
    t = time.monotonic()
    with pytest.raises(LinkError):
        link.heartbeat()
        link.heartbeat()
    assert time.monotonic() - t < 15 * timeout_s


def test_bad_addresses_are_rejected():
    with pytest.raises(ValueError, match="port"):
        ActorLink("127.0.0.1", 70000)
    with pytest.raises(ValueError, match="timeout_s"):
        ActorLink("127.0.0.1", 29550, timeout_s=0)
    with pytest.raises(ValueError, match="host"):
        LearnerLink("", 29550)
    port = _free_port()
    first = LearnerLink("127.0.0.1", port, timeout_s=1.0)
    with pytest.raises(LinkError, match=f"cannot listen on 127.0.0.1:{port}"):
        LearnerLink("127.0.0.1", port, timeout_s=1.0)
    first.close()


RECIPE = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "async_sac.py")


@pytest.mark.slow
def test_async_sac_recipe_learner_and_actor_roles(tmp_path):
    import subprocess
    import sys

    args = [
        "--total_steps", "200", "--random_steps", "50", "--training_starts", "50", "--sac.batch_size", "16",
        "--sac.hidden", "16,16", "--sac.num_critics", "2", "--sac.utd_ratio", "2", "--log_every", "50",
        "--logdir", str(tmp_path), "--progress", "false", "--port", str(_free_port()), "--timeout_s", "5",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = partial(subprocess.Popen, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    learner = run([sys.executable, RECIPE, "--role", "learner", *args])
    actor = run([sys.executable, RECIPE, "--role", "actor", *args])
    try:
        actor_out, _ = actor.communicate(timeout=150)
        learner_out, _ = learner.communicate(timeout=60)
    finally:
        for p in (learner, actor):
            p.kill()
            p.wait()
    assert actor.returncode == 0 and learner.returncode == 0, actor_out[-2000:] + learner_out[-2000:]
    assert "'frames': 200" in actor_out
    run_dir = tmp_path / "async_sac_learner_seed0"
    assert (run_dir / "checkpoints" / "checkpoint-000000000200").is_dir()
    lags = [float(line.split(",")[1]) for line in (run_dir / "scalars/train/actor_policy_lag.csv").read_text().split()]
    assert lags and all(lag >= 0 for lag in lags)
    # a restarted learner resumes its state from the checkpoint
    resumed = subprocess.run([sys.executable, RECIPE, "--role", "learner", "--resume", "true", *args],
                             capture_output=True, text=True, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resumed frames=200" in resumed.stdout



def _raw_client(port):
    """A store client that is not a RemoteActor: it writes whatever it likes under the link's keys."""
    from datetime import timedelta

    import torch.distributed as dist

    return dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=2))


class _OpensAFileWhenUnpickled:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _torch_save(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_learner_drops_bad_batches_and_keeps_pulling(tmp_path, caplog):
    import pickle

    from tensordict import TensorDict

    from torchrl_serl.training.distributed import _BEATS, _TRANSITIONS, batch_to_bytes

    port = _free_port()
    link = LearnerLink("127.0.0.1", port, timeout_s=2.0)
    link.publish_weights(make_policy(), 0)
    raw = _raw_client(port)
    opened = tmp_path / "opened"
    for item in (b"garbage", batch_to_bytes(TensorDict({"foo": torch.zeros(3, 2)}, [3])),  # wrong keys
                 pickle.dumps(_OpensAFileWhenUnpickled(str(opened))),
                 _torch_save({"batch_size": [1], "data": {"x": _OpensAFileWhenUnpickled(str(opened))}})):
        raw.queue_push(_TRANSITIONS, item)
    raw.set(_BEATS, b"\xffgarbage")
    assert link.actor_seen_within(1.0)  # a heartbeat it cannot parse is still no error

    actor = RemoteActor(make_env, make_policy(), host="127.0.0.1", port=port, timeout_s=2.0, seed=0)
    actor.run(total_frames=50)  # five good batches behind the bad ones
    with caplog.at_level("WARNING", logger="torchrl_serl.training.distributed"):
        good = link.pull()
    assert [b.numel() for b in good] == [10] * 5
    assert link.stats["dropped"] == 4 and link.stats["received"] == 5
    assert not opened.exists(), "a payload was unpickled"
    assert "dropped a transition batch" in caplog.text

    # after the first good batch, a batch must match its keys, dtypes and shapes, and be finite
    batch = good[0]
    nan_reward = batch.clone()
    nan_reward["next", "reward"][3] = float("nan")
    # one row on the wire, 10**10 rows (terabytes) once copied into the buffer
    huge = batch[:1].apply(lambda t: t.expand(10**10, *t.shape[1:]), batch_size=[10**10])
    for bad in (batch.clone().set("action", batch["action"].double()), batch.clone().set("extra", torch.zeros(10)),
                batch.exclude(("next", "policy_version")), nan_reward,
                batch.clone().set("observation", torch.zeros(10, 4)), huge):
        raw.queue_push(_TRANSITIONS, batch_to_bytes(bad))
    raw.queue_push(_TRANSITIONS, batch_to_bytes(batch))
    pulled = link.pull()
    assert len(pulled) == 1 and (pulled[0] == batch).all()
    assert link.stats["dropped"] == 10 and link.stats["received"] == 6
    link.close()


def test_learner_checks_batches_against_a_transition_example():
    from torchrl_serl.training.distributed import _TRANSITIONS, batch_to_bytes

    port = _free_port()
    actor = RemoteActor(make_env, make_policy(), host="127.0.0.1", port=port, timeout_s=2.0, seed=0)
    example = next(iter(actor.collector))
    actor.collector.shutdown()
    link = LearnerLink("127.0.0.1", port, timeout_s=2.0, transition_example=example)
    raw = _raw_client(port)
    # well formed and first, but not what the actors send: it must not become the schema
    raw.queue_push(_TRANSITIONS, batch_to_bytes(example.exclude("collector").set("extra", torch.zeros(10))))
    raw.queue_push(_TRANSITIONS, batch_to_bytes(example.exclude("collector")))
    assert len(link.pull()) == 1 and link.stats["dropped"] == 1
    link.close()


def test_actor_keeps_its_weights_when_the_link_serves_bad_ones(caplog):
    import threading

    from torchrl_serl.training.distributed import _WEIGHTS, _WEIGHTS_TAG

    port = _free_port()
    link = LearnerLink("127.0.0.1", port, timeout_s=2.0)
    learner_policy = make_policy()
    link.publish_weights(learner_policy, 7)
    actor = RemoteActor(make_env, make_policy(), host="127.0.0.1", port=port, timeout_s=2.0,
                        reconnect_every_s=0.1, seed=0)
    result = {}
    thread = threading.Thread(target=lambda: result.update(stats=actor.run()), daemon=True)

    def wait(predicate, what):
        deadline = time.monotonic() + 30
        while not predicate(actor.stats):
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {actor.stats}"
            assert thread.is_alive(), f"the actor stopped: {actor.stats}"
            time.sleep(0.02)

    raw = _raw_client(port)
    other_arch = nn.Linear(3, 3).state_dict()
    nan_state = {k: torch.full_like(v, float("nan")) for k, v in learner_policy.state_dict().items()}
    with caplog.at_level("WARNING", logger="torchrl_serl.training.distributed"):
        thread.start()
        wait(lambda s: s["weights_version"] == 7, "the learner's weights")
        for n, payload in enumerate((b"garbage", _torch_save({"session": "x", "version": 8, "state": other_arch}),
                                     _torch_save({"session": "x", "version": 9, "state": nan_state}))):
            raw.set(_WEIGHTS, payload)
            raw.set(_WEIGHTS_TAG, f"x:{8 + n}")
            wait(lambda s: s["bad_weights"] == n + 1, f"bad weights {n} to be dropped")
        raw.set(_WEIGHTS_TAG, b"\xff\xfe")  # an undecodable tag: one more (bad) fetch, no link error
        wait(lambda s: s["bad_weights"] == 4, "the undecodable tag")
        sent = actor.stats["sent"]
        wait(lambda s: s["sent"] >= sent + 5, "the actor to keep sending")
    assert actor.stats["weights_version"] == 7 and actor.stats["weight_updates"] == 1
    for name, value in actor.policy.state_dict().items():
        torch.testing.assert_close(value, learner_policy.state_dict()[name])
    assert "dropped weights" in caplog.text
    link.publish_weights(learner_policy, 10)  # the learner's next weights are taken again
    wait(lambda s: s["weights_version"] == 10, "the learner's next weights")
    actor.stop()
    thread.join(30)
    assert result["stats"]["frames"] > 0
    link.close()


def test_a_failing_link_thread_stops_the_actor_loudly(caplog):
    port = _free_port()
    link = LearnerLink("127.0.0.1", port, timeout_s=2.0)
    link.publish_weights(make_policy(), 1)
    actor = RemoteActor(make_env, make_policy(), host="127.0.0.1", port=port, timeout_s=2.0, seed=0)

    def broken():
        raise RuntimeError("a bug in the link thread")

    actor.link.weights_tag = broken
    with caplog.at_level("ERROR", logger="torchrl_serl.training.distributed"):
        with pytest.raises(LinkError, match="link thread failed") as info:
            actor.run(total_frames=100_000)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "a bug in the link thread" in caplog.text
    link.close()
