"""Actor and learner over 127.0.0.1: secret, garbage, learner restart, actor crash, acknowledgements, deadlines."""
import io
import json
import multiprocessing as mp
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import partial

import pytest
import torch
import zmq
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs import GymEnv, Transform, TransformedEnv
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal

from torchrl_serl.security import SECRET_ENV, curve_client_options
from torchrl_serl.training.distributed import (
    PROTOCOL,
    PUSH,
    WEIGHTS,
    ActorLink,
    BadPayload,
    LearnerLink,
    LinkError,
    RemoteActor,
)

make_env = partial(GymEnv, "Pendulum-v1")
CTX = mp.get_context("spawn")
SECRET = "a-shared-secret-of-enough-length"
OTHER_SECRET = "another-secret-of-enough-length"
# Without a secret the link warns (loopback only); the tests that run without one say so themselves.
pytestmark = pytest.mark.filterwarnings("ignore:actor/learner link on:UserWarning")


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
    link = LearnerLink("127.0.0.1", port, secret=SECRET)
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
            "actor_seen": link.actors_seen_within(1.0) > 0, "session": link.session,
        })
        time.sleep(0.02)


def actor_main(port, stats_path):
    torch.set_num_threads(1)
    actor = RemoteActor(make_env, make_policy(), host="127.0.0.1", port=port, secret=SECRET, timeout_s=1.0,
                        reconnect_every_s=0.2, frames_per_batch=10, seed=0, max_learner_silence_s=2.0)

    def report():  # also while the actor holds, when no batch comes
        while True:
            _write_json(stats_path, actor.stats)
            time.sleep(0.05)

    threading.Thread(target=report, daemon=True).start()
    actor.run()


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


def _wait_until(predicate, what, timeout_s=60):
    """Polls ``predicate`` (state, not wall-clock time) with a generous overall deadline."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


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


class _ActorThread:
    """A RemoteActor acting in a thread until stopped; ``stats`` is live."""

    def __init__(self, actor: RemoteActor):
        self.actor, self.result, self.error = actor, None, None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.result = self.actor.run()
        except BaseException as err:  # surfaced by wait()/stop()
            self.error = err

    @property
    def stats(self) -> dict:
        return self.actor.stats

    def wait(self, predicate, what, timeout_s=60):
        def check():
            assert self.thread.is_alive(), f"the actor stopped ({self.error!r}): {self.stats}"
            return predicate(self.stats)

        _wait_until(check, f"{what}: {self.stats}", timeout_s)

    def stop(self) -> dict:
        self.actor.stop()
        self.thread.join(60)
        assert not self.thread.is_alive() and self.error is None, self.error
        return self.result


@pytest.fixture
def learners():
    started = []

    def start(*args, **kwargs):
        link = LearnerLink(*args, **kwargs)
        started.append(link)
        return link

    try:
        yield start
    finally:
        for link in started:
            link.close()


@pytest.mark.slow
def test_learner_restart_and_actor_crash(procs, tmp_path):
    port = _free_port()
    learner_stats, actor_stats = tmp_path / "learner.json", tmp_path / "actor.json"
    learner = procs(learner_main, port, str(learner_stats), 0)
    actor = procs(actor_main, port, str(actor_stats))

    # loopback: transitions flow to the learner, its weights flow back (frames carry its versions)
    _wait(learner_stats, lambda s: s["received"] >= 200 and max(s["versions_seen"]) >= 1, 300,
          "transitions acted with the learner's weights")

    # learner restart: kill it; after max_learner_silence_s the actor holds (no new env step)
    learner.kill()
    learner.join(10)
    held = _wait(actor_stats, lambda s: s["holding"] and s["link_errors"] > 0, 60,
                 "the actor to hold while the learner is down")
    later = _wait(actor_stats, lambda s: s["link_errors"] >= held["link_errors"] + 3, 60, "more failed calls")
    assert later["holding"] and later["frames"] == held["frames"] and later["holds"] == 1
    assert actor.is_alive()
    # a new learner (new session, versions from 10_000) on the same port: the actor reconnects,
    # flushes what it collected before holding, and acts on with the new learner's weights
    os.remove(learner_stats)
    learner = procs(learner_main, port, str(learner_stats), 10_000)
    stats = _wait(learner_stats, lambda s: max(s["versions_seen"], default=-1) > 10_000, 300,
                  "frames acted with the restarted learner's weights")
    assert stats["received"] >= 200  # the backlog kept while the learner was down arrived
    assert actor.is_alive()
    resumed = _wait(actor_stats, lambda s: s["frames"] > held["frames"] and not s["holding"], 60, "acting on")
    assert resumed["holds"] == 1 and resumed["held_s"] > 0

    # actor crash: the learner keeps its buffer, optimizer and version, and serves a new actor
    actor.kill()
    actor.join(10)
    before = _wait(learner_stats, lambda s: not s["actor_seen"], 60, "the learner to notice the actor is gone")
    after = _wait(learner_stats, lambda s: s["adam_steps"] > before["adam_steps"], 60, "the learner to train on")
    assert learner.is_alive()
    assert after["session"] == before["session"]
    assert after["buffer"] == before["buffer"] == after["received"]
    assert after["version"] > before["version"] > 10_000
    procs(actor_main, port, str(actor_stats))
    _wait(learner_stats, lambda s: s["received"] >= after["received"] + 200 and s["actor_seen"]
          and s["adam_steps"] > after["adam_steps"], 300, "a new actor to feed the same learner")


def test_remote_actor_acts_with_the_learner_weights(learners):
    link = learners("127.0.0.1", 0, secret=SECRET)
    learner_policy = make_policy()
    link.publish_weights(learner_policy, 7)
    actor = RemoteActor(make_env, make_policy(), host="127.0.0.1", port=link.port, secret=SECRET, timeout_s=5.0,
                        seed=0)
    stats = actor.run(total_frames=300)
    data = torch.cat(link.pull())
    assert data.numel() == stats["frames"] == 300 and stats["acked"] == 30 and stats["weights_version"] == 7
    assert stats["bytes_sent"] > 0 and stats["bytes_received"] > 0
    versions = data["next", "policy_version"].squeeze(-1)
    assert set(versions.tolist()) <= {-1, 7} and (versions == 7).sum() >= 200
    tagged = data[versions == 7]
    with torch.no_grad():
        # the actor acted with the published network, not its own initial one
        torch.testing.assert_close(tagged["loc"], learner_policy(tagged.select("observation").clone())["loc"])


def test_at_most_one_weights_payload_per_batch(learners):
    link = learners("127.0.0.1", 0, secret=SECRET)
    policy = make_policy()
    link.publish_weights(policy, 0)
    payload_bytes = len(link._weights[1])
    done = threading.Event()

    def publish_fast():  # a learner far faster than the actor
        version = 0
        while not done.is_set():
            version += 1
            link.publish_weights(policy, version)
            time.sleep(0.001)

    publisher = threading.Thread(target=publish_fast, daemon=True)
    publisher.start()
    actor = RemoteActor(make_env, make_policy(), host="127.0.0.1", port=link.port, secret=SECRET, seed=0)
    stats = actor.run(total_frames=300)
    done.set()
    publisher.join(10)
    batches = stats["frames"] // 10
    assert 0 < stats["weight_updates"] <= batches
    # the weights it takes between batches, no more: one payload per batch (plus small answers)
    assert stats["bytes_received"] < (batches + 1) * payload_bytes + 300 * (batches + 100)


@pytest.mark.parametrize("learner_secret, actor_secret", [
    (SECRET, OTHER_SECRET), (SECRET, None), (None, SECRET),
], ids=["different secrets", "actor without secret", "learner without secret"])
def test_a_wrong_secret_is_refused(learners, monkeypatch, caplog, learner_secret, actor_secret):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    link = learners("127.0.0.1", 0, secret=learner_secret)
    link.publish_weights(make_policy(), 3)
    actor = _ActorThread(RemoteActor(make_env, make_policy(), host="127.0.0.1", port=link.port, secret=actor_secret,
                                     timeout_s=1.0, reconnect_every_s=0.1, seed=0, max_learner_silence_s=1.0))
    with caplog.at_level("WARNING", logger="torchrl_serl.training.distributed"):
        # its calls fail, the learner refuses its handshakes, and the unanswered actor holds
        actor.wait(lambda s: s["link_errors"] >= 2 and s["holding"], "refused calls and a hold")
        _wait_until(lambda: link.stats["refused_handshakes"] >= 2, f"refused handshakes: {link.stats}")
        stats = actor.stop()
    # no transition reached the learner, no weights reached the actor
    assert link.pull() == [] and link.stats["received"] == 0 and link.actors_seen_within(3600) == 0
    assert stats["acked"] == 0 and stats["weights_version"] == -1 and stats["weight_updates"] == 0
    assert stats["bytes_received"] == 0
    assert "refused the handshake" in caplog.text


def test_no_secret_means_loopback_only_with_a_warning(monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(ValueError, match="without a secret"):
        LearnerLink("0.0.0.0", 0)
    with pytest.raises(ValueError, match="without a secret"):
        ActorLink("192.0.2.1", 29550)
    with pytest.raises(ValueError, match="without a secret"):
        RemoteActor(make_env, make_policy(), host="192.0.2.1", port=29550)
    with pytest.warns(UserWarning, match="no secret"):
        link = LearnerLink("127.0.0.1", 0)
    with pytest.warns(UserWarning, match="no secret"):
        actor_link = ActorLink("localhost", link.port)
    actor_link.connect()
    actor_link.close()
    link.close()
    # with a secret (here from the environment) every interface is fine
    monkeypatch.setenv(SECRET_ENV, SECRET)
    LearnerLink("0.0.0.0", 0).close()
    with pytest.raises(ValueError, match="bytes; at least"):
        LearnerLink("0.0.0.0", 0, secret="short")


def _raw_dealer(port, secret=None):
    """A ZMQ peer that is not an ActorLink: it sends whatever it likes."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for option, value in (curve_client_options(secret.encode()) if secret else {}).items():
        sock.setsockopt(option, value)
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def _raw_request(sock, kind, *body, actor_id=b"raw-peer-0123456"):
    request_id = os.urandom(8)
    sock.send_multipart([PROTOCOL, kind, request_id, actor_id, *body])
    assert sock.poll(30_000), "the learner did not answer"
    reply = sock.recv_multipart()
    assert reply[:3] == [PROTOCOL, kind, request_id]
    return reply[4:]


@pytest.mark.parametrize("secret", [SECRET, None], ids=["curve", "no secret"])
def test_garbage_on_the_port_leaves_the_learner_serving(learners, secret):
    link = learners("127.0.0.1", 0, secret=secret, max_message_bytes=64 * 1024)
    learner_policy = make_policy()
    link.publish_weights(learner_policy, 5)
    # bytes that are not ZMTP, and a ZMTP greeting followed by garbage
    for junk in (os.urandom(256 * 1024), b"\xff" + b"\0" * 8 + b"\x7f\x03\x00NULL" + b"\0" * 48 + os.urandom(4096)):
        with socket.create_connection(("127.0.0.1", link.port)) as raw:
            try:
                raw.sendall(junk)
            except OSError:
                pass  # the learner may hang up mid-way: that is the point
    # a peer that holds the learner's server key but not the secret's client key
    stranger = zmq.Context.instance().socket(zmq.DEALER)
    stranger.setsockopt(zmq.LINGER, 0)
    options = curve_client_options(SECRET.encode())
    options[zmq.CURVE_PUBLICKEY], options[zmq.CURVE_SECRETKEY] = zmq.curve_keypair()
    for option, value in options.items():
        stranger.setsockopt(option, value)
    stranger.connect(f"tcp://127.0.0.1:{link.port}")  # the handshake alone is refused
    # a peer admitted by the handshake (it holds the secret, or there is none) that sends garbage
    peer = _raw_dealer(link.port, secret)
    for frames in ([os.urandom(100)], [b""], [PROTOCOL], [PROTOCOL, b"nonsense", b"\0" * 8, b"\0" * 16],
                   [PROTOCOL, PUSH, b"short", b"\0" * 16, b"\0" * 8, b"x"],
                   [PROTOCOL, PUSH, b"\0" * 8, b"\0" * 16, b"\0" * 3, b"x"], [os.urandom(64) for _ in range(50)]):
        peer.send_multipart(frames)
    # a well-formed request with a payload that does not decode, or that unpickles to code, is refused
    assert _raw_request(peer, PUSH, b"\0" * 8, os.urandom(5000))[0] == b"bad"
    assert _raw_request(peer, PUSH, b"\0" * 8, pickle.dumps(os.system))[0] == b"bad"
    _wait_until(lambda: link.stats["malformed"] >= 7 and link.stats["dropped"] == 2, f"garbage handled: {link.stats}")
    # a frame over max_message_bytes: the learner hangs up on its sender
    peer.send_multipart([PROTOCOL, PUSH, b"\0" * 8, b"\0" * 16, b"\0" * 8, os.urandom(128 * 1024)])
    _wait_until(lambda: link.stats["refused_handshakes"] >= 1, f"the stranger refused: {link.stats}")
    stranger.close()

    # the learner still serves a good actor: transitions in, weights out
    actor = RemoteActor(make_env, make_policy(), host="127.0.0.1", port=link.port, secret=secret, timeout_s=5.0,
                        seed=0)
    stats = actor.run(total_frames=100)
    assert stats["acked"] == 10 and stats["weights_version"] == 5
    assert sum(b.numel() for b in link.pull()) == 100
    assert link._thread.is_alive() and link.stats["received"] == 10
    # and the peer that sent garbage is heard again once it speaks the protocol
    assert len(_raw_request(peer, WEIGHTS, b"")[0]) > 0
    peer.close()


def test_acknowledged_batches_are_neither_lost_nor_kept_twice(learners):
    # dedup: a batch sent again (its acknowledgement lost) is acknowledged again and kept once
    first = learners("127.0.0.1", 0, secret=SECRET, max_inbox=1)
    link = ActorLink("127.0.0.1", first.port, 5.0, secret=SECRET)
    actor = RemoteActor(make_env, make_policy(), host="127.0.0.1", port=first.port, secret=SECRET, seed=0)
    batch = next(iter(actor.collector)).exclude("collector")
    actor.collector.shutdown()
    assert link.push(batch, 0) and link.push(batch, 0)
    assert not link.push(batch, 1)  # inbox full: not acknowledged, the actor keeps it
    assert len(first.pull()) == 1 and first.stats["duplicates"] == 1
    assert link.push(batch, 1) and len(first.pull()) == 1
    # each actor is numbered on its own: many actors feed one learner
    other = ActorLink("127.0.0.1", first.port, 5.0, secret=SECRET)
    assert other.push(batch, 0) and len(first.pull()) == 1 and first.actors_seen_within(60) == 2
    link.close()
    other.close()
    first.close()

    # a learner restart: every frame the actor collected arrives, once, at one of the two learners
    port = first.port
    first = learners("127.0.0.1", port, secret=SECRET)
    actor = _ActorThread(RemoteActor(make_env, make_policy(), host="127.0.0.1", port=port, secret=SECRET,
                                     timeout_s=1.0, reconnect_every_s=0.1, seed=0, max_learner_silence_s=None))
    actor.wait(lambda s: s["acked"] >= 20, "acknowledged batches")
    first.close()
    pulled = first.pull()
    acked = actor.stats["acked"]
    assert len(pulled) == first.stats["received"] >= acked
    actor.wait(lambda s: s["link_errors"] >= 1 and s["frames"] >= 10 * acked + 100, "acting while the learner is down")
    second = learners("127.0.0.1", port, secret=SECRET)
    actor.wait(lambda s: s["acked"] >= acked + 20, "the backlog flushed to the new learner")
    stats = actor.stop()  # hands its last batches over
    pulled += second.pull()
    rows = torch.cat(pulled)
    assert stats["dropped"] == stats["rejected"] == 0
    assert stats["acked"] * 10 == stats["frames"]
    assert first.stats["received"] + second.stats["received"] >= stats["acked"]
    keys = torch.cat([rows["observation"], rows["action"], rows["next", "observation"]], dim=-1)
    unique = torch.unique(keys, dim=0).shape[0]
    assert unique == stats["frames"]  # nothing the actor collected is missing
    # at most the one batch the first learner took but could not acknowledge before it stopped
    assert rows.numel() - unique <= 10


def test_a_batch_over_the_learners_limit_is_refused_by_the_actor(learners):
    link = learners("127.0.0.1", 0, secret=SECRET, max_message_bytes=4096)
    batch = TensorDict({"observation": torch.zeros(1000, 3)}, [1000])  # 12 KB
    actor_link = ActorLink("127.0.0.1", link.port, 5.0, secret=SECRET)
    with pytest.raises(BadPayload, match="max_message_bytes"):
        actor_link.push(batch, 0)
    actor_link.close()


def _serve(port, ready):
    link = LearnerLink("127.0.0.1", port, secret=SECRET)
    link.publish_weights(nn.Linear(2, 2), 1)
    ready.set()
    while True:
        time.sleep(1)


def _state(pid) -> str:
    """The process state letter of /proc/<pid>/stat ("T": stopped)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_every_call_has_a_deadline(procs):
    timeout_s = 1.0
    # nobody listening
    t = time.monotonic()
    with pytest.raises(LinkError, match="cannot reach learner"):
        ActorLink("127.0.0.1", _free_port(), timeout_s, secret=SECRET).connect()
    # generous upper bounds: without a deadline these calls would hang for good, and a busy CI
    # machine must not fail them by being slow
    assert time.monotonic() - t < 15 * timeout_s

    port, ready = _free_port(), CTX.Event()
    learner = procs(_serve, port, ready)
    assert ready.wait(120)
    link = ActorLink("127.0.0.1", port, timeout_s, secret=SECRET)
    assert link.fetch_weights()[0].endswith(":1")
    # a hung learner (stopped, socket open): the call gives up at its deadline
    os.kill(learner.pid, signal.SIGSTOP)
    try:
        _wait_until(lambda: _state(learner.pid) == "T", "the learner to be stopped")
        t = time.monotonic()
        with pytest.raises(LinkError, match="fetch_weights.*deadline"):
            link.fetch_weights()
        elapsed = time.monotonic() - t
        assert timeout_s * 0.5 < elapsed < 15 * timeout_s, elapsed
        # reconnecting to it fails at the deadline too (the handshake needs the learner)
        t = time.monotonic()
        with pytest.raises(LinkError, match="cannot reach learner"):
            link.connect()
        assert time.monotonic() - t < 15 * timeout_s
    finally:
        os.kill(learner.pid, signal.SIGCONT)
    # a dead learner: the calls fail within the deadline
    learner.kill()
    learner.join(10)
    t = time.monotonic()
    with pytest.raises(LinkError):
        link.fetch_weights()
        link.fetch_weights()
    assert time.monotonic() - t < 15 * timeout_s


def test_bad_addresses_are_rejected(learners):
    with pytest.raises(ValueError, match="port"):
        ActorLink("127.0.0.1", 70000, secret=SECRET)
    with pytest.raises(ValueError, match="timeout_s"):
        ActorLink("127.0.0.1", 29550, timeout_s=0, secret=SECRET)
    with pytest.raises(ValueError, match="host"):
        LearnerLink("", 29550, secret=SECRET)
    first = learners("127.0.0.1", 0, secret=SECRET)
    with pytest.raises(LinkError, match=f"cannot listen on 127.0.0.1:{first.port}"):
        LearnerLink("127.0.0.1", first.port, secret=SECRET)


RECIPE = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "async_sac.py")


@pytest.mark.slow
def test_async_sac_recipe_learner_and_actor_roles(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    args = [
        "--total_steps", "200", "--random_steps", "50", "--training_starts", "50", "--sac.batch_size", "16",
        "--sac.hidden", "16,16", "--sac.num_critics", "2", "--sac.utd_ratio", "2", "--log_every", "50",
        "--logdir", str(tmp_path), "--progress", "false", "--port", str(_free_port()), "--timeout_s", "5",
    ]
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV} | {"OMP_NUM_THREADS": "1"}
    # no secret on every interface: refused before anything is bound
    refused = subprocess.run([sys.executable, RECIPE, "--role", "learner", "--host", "0.0.0.0", *args],
                             capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode != 0 and "without a secret" in refused.stderr
    run = partial(subprocess.Popen, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # the learner reads the secret from a file, the actor from the environment
    learner = run([sys.executable, RECIPE, "--role", "learner", "--secret_file", str(secret_file), *args], env=env)
    actor = run([sys.executable, RECIPE, "--role", "actor", *args], env=env | {SECRET_ENV: SECRET})
    try:
        actor_out, _ = actor.communicate(timeout=150)
        learner_out, _ = learner.communicate(timeout=60)
    finally:
        for p in (learner, actor):
            p.kill()
            p.wait()
    assert actor.returncode == 0 and learner.returncode == 0, actor_out[-2000:] + learner_out[-2000:]
    assert "'frames': 200" in actor_out and "'acked': 20" in actor_out
    assert "no secret" not in actor_out + learner_out
    run_dir = tmp_path / "async_sac_learner_seed0"
    assert (run_dir / "checkpoints" / "checkpoint-000000000200").is_dir()
    lags = [float(line.split(",")[1]) for line in (run_dir / "scalars/train/actor_policy_lag.csv").read_text().split()]
    assert lags and all(lag >= 0 for lag in lags)
    # the learner logs the ratio it reached, never above --updates_per_step (default 1); the actor,
    # held a batch ahead of it, never leaves it more than a batch behind (151 updates owed at 200)
    ratios = [float(line.split(",")[1]) for line in (run_dir / "scalars/train/updates_per_step.csv").read_text().split()]
    assert ratios and all(0 <= r <= 1 for r in ratios) and ratios[-1] >= 0.9, ratios
    # a restarted learner resumes its state from the checkpoint
    resumed = subprocess.run([sys.executable, RECIPE, "--role", "learner", "--resume", "true",
                              "--secret_file", str(secret_file), *args],
                             capture_output=True, text=True, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resumed frames=200" in resumed.stdout


def test_learner_refuses_bad_batches_and_keeps_serving(learners, tmp_path, caplog):
    link = learners("127.0.0.1", 0, secret=SECRET)
    link.publish_weights(make_policy(), 0)
    pusher = ActorLink("127.0.0.1", link.port, 5.0, secret=SECRET)
    with pytest.raises(BadPayload, match="refused the batch.*missing keys"):
        pusher.push(TensorDict({"foo": torch.zeros(3, 2)}, [3]), 0)
    peer = _raw_dealer(link.port, SECRET)
    opened = tmp_path / "opened"

    class OpensAFileWhenUnpickled:
        def __reduce__(self):
            return (open, (str(opened), "w"))

    archive = io.BytesIO()
    torch.save({"batch_size": [1], "data": {"x": OpensAFileWhenUnpickled()}}, archive)
    for payload in (pickle.dumps(OpensAFileWhenUnpickled()), archive.getvalue()):
        assert _raw_request(peer, PUSH, b"\0" * 8, payload)[0] == b"bad"
    peer.close()

    actor = RemoteActor(make_env, make_policy(), host="127.0.0.1", port=link.port, secret=SECRET, seed=0)
    with caplog.at_level("WARNING", logger="torchrl_serl.training.distributed"):
        assert actor.run(total_frames=50)["acked"] == 5  # five good batches after the bad ones
    good = link.pull()
    assert [b.numel() for b in good] == [10] * 5
    assert link.stats["dropped"] == 3 and link.stats["received"] == 5
    assert not opened.exists(), "a payload was unpickled"
    assert "refused a transition batch" in caplog.text

    # after the first good batch, a batch must match its keys, dtypes and shapes, and be finite
    batch = good[0].exclude("collector")  # what the actor sent; the learner adds its actor number
    nan_reward = batch.clone()
    nan_reward["next", "reward"][3] = float("nan")
    # one row on the wire, 10**10 rows (terabytes) once copied into the buffer
    huge = batch[:1].apply(lambda t: t.expand(10**10, *t.shape[1:]), batch_size=[10**10])
    for seq, bad in enumerate((batch.clone().set("action", batch["action"].double()),
                               batch.clone().set("extra", torch.zeros(10)), batch.exclude(("next", "policy_version")),
                               nan_reward, batch.clone().set("observation", torch.zeros(10, 4)), huge), start=1):
        with pytest.raises(BadPayload, match="refused the batch"):
            pusher.push(bad, seq)
    assert pusher.push(batch, 100)
    pulled = link.pull()
    assert len(pulled) == 1 and (pulled[0].exclude("collector") == batch).all()
    assert link.stats["dropped"] == 9 and link.stats["received"] == 6
    pusher.close()


def test_learner_checks_batches_against_a_transition_example(learners):
    actor = RemoteActor(make_env, make_policy(), host="127.0.0.1", port=_free_port(), secret=SECRET, seed=0)
    example = next(iter(actor.collector)).exclude("collector")
    actor.collector.shutdown()
    link = learners("127.0.0.1", 0, secret=SECRET, transition_example=example)
    pusher = ActorLink("127.0.0.1", link.port, 5.0, secret=SECRET)
    # well formed and first, but not what the actors send: it must not become the schema
    with pytest.raises(BadPayload):
        pusher.push(example.clone().set("extra", torch.zeros(10)), 0)
    assert pusher.push(example, 1)
    assert len(link.pull()) == 1 and link.stats["dropped"] == 1
    pusher.close()


class _CountSteps(Transform):
    """Counts the steps and resets that reach the env it wraps."""

    def __init__(self, counts: dict):
        super().__init__()
        self.counts = counts

    def _step(self, tensordict, next_tensordict):
        self.counts["steps"] += 1
        return next_tensordict

    def _reset(self, tensordict, tensordict_reset):
        self.counts["resets"] += 1
        return tensordict_reset


def test_actor_holds_while_the_learner_is_silent_and_acts_on_when_it_answers(learners, caplog):
    """No env step or reset (no arm motion) once the learner has been silent for
    max_learner_silence_s; acting resumes when a learner answers on the same port."""
    link = learners("127.0.0.1", 0, secret=SECRET)
    port = link.port
    link.publish_weights(make_policy(), 1)
    counts = {"steps": 0, "resets": 0}
    actor = _ActorThread(RemoteActor(lambda: TransformedEnv(make_env(), _CountSteps(counts)), make_policy(),
                                     host="127.0.0.1", port=port, secret=SECRET, timeout_s=0.5,
                                     reconnect_every_s=0.05, seed=0, max_learner_silence_s=0.5))
    with caplog.at_level("WARNING", logger="torchrl_serl.training.distributed"):
        actor.wait(lambda s: s["acked"] >= 3 and s["weights_version"] == 1, "acting with the learner's weights")
        link.close()  # the learner goes away
        actor.wait(lambda s: s["holding"], "the actor to hold")
        held = dict(counts)
        errors = actor.stats["link_errors"]
        actor.wait(lambda s: s["link_errors"] >= errors + 3, "more unanswered calls")
        assert counts == held and actor.stats["holding"] and actor.stats["holds"] == 1
        assert "holding, no new actions" in caplog.text

        second = learners("127.0.0.1", port, secret=SECRET)
        second.publish_weights(make_policy(), 2)
        actor.wait(lambda s: not s["holding"] and s["weights_version"] == 2, "the new learner's weights")
        acked = actor.stats["acked"]
        actor.wait(lambda s: s["acked"] >= acked + 3, "acting on with the new learner")
        assert counts["steps"] > held["steps"] and "answers again" in caplog.text

        second.close()  # and a stop while holding ends the run at once
        actor.wait(lambda s: s["holding"], "a second hold")
    stats = actor.stop()
    assert stats["holds"] == 2 and not stats["holding"] and stats["held_s"] > 0


def test_a_simulated_actor_steps_at_the_learners_pace(learners):
    """LearnerLink.hold_ahead + RemoteActor(max_unacked): past the learner's limit its pushes are
    answered busy and the actor takes no step; each pull and hold_ahead lets that much more through."""
    link = learners("127.0.0.1", 0, secret=SECRET)
    link.publish_weights(make_policy(), 1)
    link.hold_ahead(20)
    counts = {"steps": 0, "resets": 0}
    actor = _ActorThread(RemoteActor(lambda: TransformedEnv(make_env(), _CountSteps(counts)), make_policy(),
                                     host="127.0.0.1", port=link.port, secret=SECRET, frames_per_batch=10,
                                     reconnect_every_s=0.05, seed=0, max_unacked=1))
    # batches 1-2 accepted, batch 3 refused and kept: no step 31 until the learner takes more
    actor.wait(lambda s: s["pacing"] and s["acked"] == 2, "the actor to wait for the learner")
    assert counts["steps"] == 30 and link.pending == 2
    assert sum(b.numel() for b in link.pull()) == 20
    link.hold_ahead(10)  # batch 3 goes through, batch 4 is refused
    actor.wait(lambda s: s["pacing"] and s["acked"] == 3, "the actor to wait again")
    assert counts["steps"] == 40 and link.pending == 1
    link.set_frame_limit(None)  # no limit: the actor runs free
    actor.wait(lambda s: s["acked"] >= 8, "the actor to run on")
    stats = actor.stop()
    assert stats["paced_s"] > 0 and not stats["pacing"]
    with pytest.raises(ValueError, match="max_unacked"):
        RemoteActor(make_env, make_policy(), host="127.0.0.1", port=_free_port(), secret=SECRET, max_unacked=0)


def test_learner_silence_limit_is_checked():
    with pytest.raises(ValueError, match="max_learner_silence_s"):
        RemoteActor(make_env, make_policy(), host="127.0.0.1", port=_free_port(), secret=SECRET,
                    max_learner_silence_s=0)


def test_actor_keeps_its_weights_when_the_learner_serves_bad_ones(learners, caplog):
    link = learners("127.0.0.1", 0, secret=SECRET)
    learner_policy = make_policy()
    link.publish_weights(learner_policy, 7)
    actor = _ActorThread(RemoteActor(make_env, make_policy(), host="127.0.0.1", port=link.port, secret=SECRET,
                                     timeout_s=5.0, reconnect_every_s=0.1, seed=0))
    nan_policy = make_policy()
    with torch.no_grad():
        for param in nan_policy.parameters():
            param.fill_(float("nan"))
    with caplog.at_level("WARNING", logger="torchrl_serl.training.distributed"):
        actor.wait(lambda s: s["weights_version"] == 7, "the learner's weights")
        # a learner built with another architecture, a learner whose weights diverged
        link.publish_weights(nn.Linear(3, 3), 8)
        actor.wait(lambda s: s["bad_weights"] == 1, "weights of another architecture to be dropped")
        link.publish_weights(nan_policy, 9)
        actor.wait(lambda s: s["bad_weights"] == 2, "non-finite weights to be dropped")
        link._weights = (b"x:10", b"garbage")  # bytes that are no weights at all
        actor.wait(lambda s: s["bad_weights"] == 3, "undecodable weights to be dropped")
        acked = actor.stats["acked"]
        actor.wait(lambda s: s["acked"] >= acked + 5, "the actor to keep sending")
    assert actor.stats["weights_version"] == 7 and actor.stats["weight_updates"] == 1
    for name, value in actor.actor.policy.state_dict().items():
        torch.testing.assert_close(value, learner_policy.state_dict()[name])
    assert "dropped weights" in caplog.text
    link.publish_weights(learner_policy, 11)  # the learner's next weights are taken again
    actor.wait(lambda s: s["weights_version"] == 11, "the learner's next weights")
    assert actor.stop()["frames"] > 0


def test_a_failing_link_thread_stops_the_actor_loudly(learners, caplog):
    link = learners("127.0.0.1", 0, secret=SECRET)
    link.publish_weights(make_policy(), 1)
    actor = RemoteActor(make_env, make_policy(), host="127.0.0.1", port=link.port, secret=SECRET, seed=0)

    def broken(have=None):
        raise RuntimeError("a bug in the link thread")

    actor.link.fetch_weights = broken
    with caplog.at_level("ERROR", logger="torchrl_serl.training.distributed"):
        with pytest.raises(LinkError, match="link thread failed") as info:
            actor.run(total_frames=100_000)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "a bug in the link thread" in caplog.text


def _policy_with_a_frozen_layer(frozen_seed: int) -> ProbabilisticActor:
    """``make_policy()`` whose first layer is frozen (as a pretrained trunk), its values from ``frozen_seed``."""
    policy = make_policy()
    first = policy.module[0].module[0][0]
    generator = torch.Generator().manual_seed(frozen_seed)
    with torch.no_grad():
        for param in first.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    first.requires_grad_(False)
    return policy


def test_frozen_parameters_stay_home_and_must_match(learners, caplog):
    """Weights travel without the frozen parameters (DrQ's ResNet-10: 29 MB of a 29.4 MB policy);
    an actor whose frozen parameters are not the learner's refuses the weights."""
    from torchrl_serl.training.distributed import trained_state, weights_from_bytes

    link = learners("127.0.0.1", 0, secret=SECRET)
    learner_policy = _policy_with_a_frozen_layer(0)
    link.publish_weights(learner_policy, 3)
    _, _, sent = weights_from_bytes(link._weights[1], trained_state(learner_policy))
    frozen = "module.0.module.0.0.weight"
    assert frozen in learner_policy.state_dict() and frozen not in sent and len(sent) == len(trained_state(learner_policy))
    same = _ActorThread(RemoteActor(make_env, _policy_with_a_frozen_layer(0), host="127.0.0.1", port=link.port,
                                    secret=SECRET, timeout_s=5.0, seed=0))
    same.wait(lambda s: s["weights_version"] == 3, "the learner's weights")
    for name, value in same.actor.policy.state_dict().items():  # trained ones fetched, frozen ones its own
        torch.testing.assert_close(value, learner_policy.state_dict()[name])
    same.stop()
    with caplog.at_level("WARNING", logger="torchrl_serl.training.distributed"):
        other = _ActorThread(RemoteActor(make_env, _policy_with_a_frozen_layer(1), host="127.0.0.1",
                                         port=link.port, secret=SECRET, timeout_s=5.0, seed=0))
        other.wait(lambda s: s["bad_weights"] == 1, "weights over another frozen trunk to be refused")
    assert other.stats["weights_version"] == -1 and "frozen parameters" in caplog.text
    other.stop()



def test_actors_join_and_leave_while_the_learner_trains(learners):
    """A second actor joins a running learner, the first leaves; the learner keeps taking batches
    from whoever is there and serves both the weights it publishes."""
    link = learners("127.0.0.1", 0, secret=SECRET)
    policy = make_policy()
    link.publish_weights(policy, 1)
    taken = []

    def actor(seed):
        return _ActorThread(RemoteActor(make_env, make_policy(), host="127.0.0.1", port=link.port, secret=SECRET,
                                        timeout_s=5.0, seed=seed))

    first = actor(0)
    first.wait(lambda s: s["acked"] >= 3, "the first actor's batches")
    second = actor(1)  # joins while the first acts
    second.wait(lambda s: s["acked"] >= 3 and s["weights_version"] == 1, "the second actor's batches and weights")
    assert link.actors_seen_within(60) == 2
    taken += link.pull()
    left = first.stop()  # leaves; the learner goes on with the second
    link.publish_weights(policy, 2)
    acked = second.stats["acked"]
    second.wait(lambda s: s["acked"] >= acked + 3 and s["weights_version"] == 2, "the second actor carrying on")
    taken += link.pull()
    stayed = second.stop()
    taken += link.pull(max_batches=10**9)
    # every acknowledged batch of both reached the learner, marked with its actor's number
    assert sum(b.numel() for b in taken) == 10 * (left["acked"] + stayed["acked"])
    numbers = [int(b["collector", "traj_ids"][0]) for b in taken]
    assert all((b["collector", "traj_ids"] == n).all() for b, n in zip(taken, numbers))
    assert numbers.count(0) == left["acked"] and numbers.count(1) == stayed["acked"]


def test_frozen_digest_ignores_the_memory_format():
    """A channels-last trunk (1x1 convolutions included) has the digest of its channels-first twin."""
    from torchrl_serl.training.distributed import frozen_digest

    torch.manual_seed(0)
    first = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)).requires_grad_(False)
    second = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)).requires_grad_(False)
    second.load_state_dict(first.state_dict())
    second.to(memory_format=torch.channels_last)
    assert second[1].weight.stride(-1) != 1
    assert frozen_digest(first) == frozen_digest(second) != ""


def test_bfloat16_weights_on_the_wire(learners):
    """weights_dtype=bfloat16: about half the bytes; the actor acts with the rounded float32 weights."""
    from torchrl_serl.training.distributed import trained_state, weights_dtype_named, weights_from_bytes

    policy = make_policy()
    full = learners("127.0.0.1", 0, secret=SECRET)
    half = learners("127.0.0.1", 0, secret=SECRET, weights_dtype=weights_dtype_named("bfloat16"))
    big = nn.Linear(512, 512)  # 1 MB of float32: the archive's own bytes do not count
    full.publish_weights(big, 1)
    half.publish_weights(big, 1)
    assert len(half._weights[1]) < 0.52 * len(full._weights[1])
    half.publish_weights(policy, 1)
    like = trained_state(make_policy())
    _, version, state = weights_from_bytes(half._weights[1], like)
    assert version == 1
    for name, value in trained_state(policy).items():
        assert state[name].dtype == torch.float32
        torch.testing.assert_close(state[name], value.bfloat16().float())  # rounded, nothing else
    with pytest.raises(ValueError, match="weights_dtype"):
        weights_dtype_named("float16")
    with pytest.raises(ValueError, match="weights_dtype"):
        LearnerLink("127.0.0.1", 0, secret=SECRET, weights_dtype=torch.float16)
    # an actor takes them like any weights
    actor = RemoteActor(make_env, make_policy(), host="127.0.0.1", port=half.port, secret=SECRET, seed=0)
    assert actor.run(total_frames=30)["weights_version"] == 1
    for name, value in actor.policy.state_dict().items():
        torch.testing.assert_close(value, policy.state_dict()[name].bfloat16().float())
