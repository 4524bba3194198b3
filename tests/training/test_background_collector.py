"""BackgroundCollector: the actor process keeps stepping while the learner is busy; an explicit
frame limit holds it back; a dead actor process reaches the learner as an error."""
import time
from functools import partial

import pytest
import torch
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.collectors import AsyncCollector
from torchrl.envs import GymEnv, RewardScaling, TransformedEnv
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal

from torchrl_serl.training.background_collector import BackgroundCollector

make_env = partial(GymEnv, "Pendulum-v1")
FRAMES_PER_BATCH = 10


def make_policy() -> ProbabilisticActor:
    net = nn.Sequential(MLP(in_features=3, out_features=2, num_cells=[16]), NormalParamExtractor())
    module = TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"])
    return ProbabilisticActor(module, in_keys=["loc", "scale"], distribution_class=TanhNormal,
                              distribution_kwargs={"low": -2.0, "high": 2.0})


def wait_until(condition, timeout_s: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s  # a generous bound on a loaded machine, never the expected time
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.01)


def assert_consecutive(stream) -> None:
    """One actor's steps, oldest first, nothing dropped or repeated: each step starts where the
    previous one ended unless that one ended the episode."""
    follows = (stream["observation"][1:] == stream["next", "observation"][:-1]).all(-1)
    assert (follows | stream["next", "done"][:-1].squeeze(-1)).all()


@pytest.fixture
def feed():
    torch.manual_seed(0)
    policy = make_policy()
    collector = AsyncCollector(make_env, policy, frames_per_batch=FRAMES_PER_BATCH, total_frames=-1)
    feed = BackgroundCollector(collector)
    feed.policy = policy  # the learner's copy, for the weight test
    yield feed
    feed.shutdown()


def test_actor_runs_ahead_of_a_learner_that_does_not_take_batches(feed):
    # TorchRL's AsyncCollector alone would stop one batch ahead of a consumer that does not ask
    feed.start()
    wait_until(lambda: feed.frames >= 10 * FRAMES_PER_BATCH, what="10 batches without the learner asking")
    batches = feed.drain()
    assert len(batches) >= 10
    assert all(b.shape == (FRAMES_PER_BATCH,) for b in batches)
    assert_consecutive(torch.cat(batches))
    assert feed.drain() == [] or feed.frames > len(batches) * FRAMES_PER_BATCH


def test_frame_limit_holds_the_actor_back(feed):
    feed.set_frame_limit(3 * FRAMES_PER_BATCH)
    feed.start()
    wait_until(lambda: feed.frames >= 3 * FRAMES_PER_BATCH, what="the first 3 batches")
    assert len(feed.drain(timeout_s=1.0)) == 3
    assert feed.frames == 3 * FRAMES_PER_BATCH  # the thread waits at the limit
    feed.set_frame_limit(5 * FRAMES_PER_BATCH)
    wait_until(lambda: feed.frames >= 5 * FRAMES_PER_BATCH, what="2 more batches after raising the limit")
    assert feed.frames == 5 * FRAMES_PER_BATCH
    feed.set_frame_limit(None)
    wait_until(lambda: feed.frames > 6 * FRAMES_PER_BATCH, what="batches once the limit is lifted")


def test_weights_reach_the_actor_while_it_runs(feed):
    feed.start()
    wait_until(lambda: feed.frames >= FRAMES_PER_BATCH, what="the first batch")
    with torch.no_grad():  # a learner step that drives every action to the top of the range
        last = feed.policy.module[0].module[0][-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([20.0, -20.0]))  # loc 20, scale ~0
    feed.update_policy_weights_()  # returns at once; the actor's receiver thread applies them
    top = torch.full((FRAMES_PER_BATCH, 1), 2.0)

    def acting_with_the_new_weights() -> bool:
        batches = feed.drain(timeout_s=1.0)
        return bool(batches) and torch.allclose(batches[-1]["action"], top, atol=1e-3)

    wait_until(acting_with_the_new_weights, what="a batch acted with the pushed weights")


def test_a_dead_actor_process_reaches_the_learner_as_an_error(feed):
    feed.start()
    wait_until(lambda: feed.frames >= FRAMES_PER_BATCH, what="the first batch")
    for proc in feed.collector.procs:
        proc.kill()
    with pytest.raises(RuntimeError, match="collector stopped"):
        wait_until(lambda: feed.drain() is None, what="the error")  # drain raises once the thread has seen it


def test_shutdown_while_held_at_the_limit_returns(feed):
    feed.set_frame_limit(FRAMES_PER_BATCH)
    feed.start()
    wait_until(lambda: feed.frames >= FRAMES_PER_BATCH, what="the first batch")
    feed.shutdown()
    assert not feed._thread.is_alive()
    assert all(not p.is_alive() for p in feed.collector.procs)


def _env_that_fails_in_the_actor_process():
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        raise ConnectionError("no arm at this address")
    return make_env()


def test_an_actor_that_fails_to_start_raises_and_the_learner_exits(tmp_path):
    """The actor's env fails in its own process: the error reaches the learner, whose interpreter
    then exits (TorchRL 0.14 alone leaves a weight-sync finalizer that hangs it at exit)."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "learner.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_background_collector import _env_that_fails_in_the_actor_process, make_policy\n"
        "from torchrl_serl.training.background_collector import BackgroundCollector\n"
        "if __name__ == '__main__':  # the error ends the program, as in a recipe\n"
        "    BackgroundCollector.async_collector(_env_that_fails_in_the_actor_process, make_policy(),\n"
        "                                        frames_per_batch=2, total_frames=-1)\n"
    )
    # a hang is the failure: the bound is generous (start-up on a loaded machine), never the expected time
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "ConnectionError: no arm at this address" in done.stderr


def test_hold_ahead_counts_from_what_the_learner_drained(feed):
    feed.hold_ahead(FRAMES_PER_BATCH)  # nothing drained yet: one batch
    feed.start()
    wait_until(lambda: feed.frames >= FRAMES_PER_BATCH, what="the first batch")
    assert len(feed.drain(timeout_s=1.0)) == 1 and feed.frames == FRAMES_PER_BATCH
    feed.hold_ahead(2 * FRAMES_PER_BATCH)  # 1 batch drained: up to 3 in all
    wait_until(lambda: feed.frames >= 3 * FRAMES_PER_BATCH, what="two more batches")
    assert feed.frames == 3 * FRAMES_PER_BATCH


def _env_with_rewards_shifted_up():  # Pendulum's rewards are in [-16.3, 0]: this actor's are above 80
    return TransformedEnv(make_env(), RewardScaling(loc=100.0, scale=1.0))


def test_many_actors_feed_one_learner_and_each_receives_the_weights():
    """Two actor processes (told apart by their rewards): both streams reach the learner, each one's
    steps consecutive, and pushed weights reach both."""
    torch.manual_seed(0)
    policy = make_policy()
    feed = BackgroundCollector.async_collector([make_env, _env_with_rewards_shifted_up], policy,
                                               frames_per_batch=FRAMES_PER_BATCH, total_frames=-1)
    try:
        feed.start()
        seen: dict[bool, list] = {False: [], True: []}

        def take() -> None:
            for batch in feed.drain(timeout_s=1.0):
                second = batch["next", "reward"] > 50
                assert second.all() or not second.any()  # one actor's steps per batch
                seen[bool(second.all())].append(batch)

        wait_until(lambda: take() or all(seen.values()), what="batches from both actors")
        for stream in map(torch.cat, seen.values()):  # each actor's steps consecutive
            assert_consecutive(stream)
        with torch.no_grad():
            last = policy.module[0].module[0][-1]
            last.weight.zero_()
            last.bias.copy_(torch.tensor([20.0, -20.0]))
        feed.update_policy_weights_()
        top = torch.full((FRAMES_PER_BATCH, 1), 2.0)
        seen = {False: [], True: []}

        def both_act_with_the_new_weights() -> bool:
            take()
            return all(any(torch.allclose(b["action"], top, atol=1e-3) for b in batches) for batches in seen.values())

        wait_until(both_act_with_the_new_weights, what="both actors acting with the pushed weights")
    finally:
        feed.shutdown()


def test_held_actors_lose_no_steps():
    """Two actors held back at a frame limit for longer than TorchRL's 1 s hand-over timeout: once
    released, each one's steps are consecutive (TorchRL's single shared output slot made the second
    worker drop its batch and step on)."""
    from torchrl.collectors._constants import _TIMEOUT

    torch.manual_seed(0)
    feed = BackgroundCollector.async_collector([make_env, _env_with_rewards_shifted_up], make_policy(),
                                               frames_per_batch=FRAMES_PER_BATCH, total_frames=-1)
    try:
        feed.set_frame_limit(FRAMES_PER_BATCH)
        feed.start()
        wait_until(lambda: feed.frames >= FRAMES_PER_BATCH, what="the first batch")
        time.sleep(3 * _TIMEOUT)  # both workers have a batch ready; a dropping worker would have dropped it
        feed.set_frame_limit(None)
        batches = []
        wait_until(lambda: batches.extend(feed.drain(timeout_s=1.0)) or len(batches) >= 8, what="8 batches")
        streams = {False: [], True: []}
        for batch in batches:
            streams[bool((batch["next", "reward"] > 50).all())].append(batch)
        for stream in map(torch.cat, streams.values()):
            assert_consecutive(stream)
    finally:
        feed.shutdown()
