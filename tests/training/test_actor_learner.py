"""Asynchronous actor/learner on one machine: transitions flow, weights reach the actor, lag stays bounded."""
from functools import partial

import pytest
import torch
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs import GymEnv
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal

from torchrl_serl.training.actor_learner import POLICY_VERSION_KEY, ActorLearner

make_env = partial(GymEnv, "Pendulum-v1")


def make_policy() -> ProbabilisticActor:
    net = nn.Sequential(MLP(in_features=3, out_features=2, num_cells=[32, 32]), NormalParamExtractor())
    module = TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -2.0, "high": 2.0},
    )


@pytest.fixture(scope="module")
def actor_learner():
    # one actor process for the module: spawning it (imports torch + torchrl) costs ~10 s here
    torch.manual_seed(0)
    policy = make_policy()
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(50_000), shared=True)
    al = ActorLearner(make_env, policy, rb, frames_per_batch=10, seed=0)
    try:
        al.start()
        al.wait_for_frames(100)
        yield al
    finally:
        al.close()


def _perturb(policy: nn.Module) -> None:
    # stands in for a gradient step: any change of the weights the actor must pick up
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))


def test_actor_streams_while_learner_is_busy(actor_learner):
    al = actor_learner
    before = al.frames
    # the learner is busy (no sampling, no push) and the actor must keep acting and writing
    x = torch.randn(256, 256)
    for _ in range(200):
        x = torch.tanh(x @ x.T / 256)
    al.wait_for_frames(before + 200, timeout_s=30)
    batch = al.replay_buffer.sample(64)
    assert batch["action"].shape == (64, 1)
    assert batch["next", "observation"].shape == (64, 3)
    assert (batch[POLICY_VERSION_KEY] <= al.version).all()


def test_pushed_weights_drive_the_actor(actor_learner):
    al = actor_learner
    previous = al.version
    _perturb(al.policy)
    version = al.push_weights(learner_step=1)
    assert version == previous + 1
    snapshot = make_policy()
    snapshot.load_state_dict(al.policy.state_dict())
    al.wait_for_frames(al.frames + 100, timeout_s=30)
    data = al.replay_buffer[: al.frames]
    versions = data[POLICY_VERSION_KEY].squeeze(-1)
    new = data[versions == version]
    assert new.numel() > 0, "no frame was collected with the pushed weights"
    with torch.no_grad():
        expected = snapshot(new.select("observation").clone())["loc"]
        # the loc the actor computed equals the learner's pushed network on the same observations
        torch.testing.assert_close(new["loc"], expected)
        old = data[versions == previous]
        assert not torch.allclose(old["loc"], snapshot(old.select("observation").clone())["loc"])


def test_staleness_is_bounded_by_one_push(actor_learner):
    al = actor_learner
    fpb = 10
    written_at = {}
    for step in range(1, 41):
        _perturb(al.policy)
        al.replay_buffer.sample(32)
        if step % 5 == 0:
            version = al.push_weights(learner_step=100 + step)
            written_at[version] = int(al.replay_buffer.write_count)
    al.wait_for_frames(al.frames + 3 * fpb, timeout_s=30)
    versions = al.replay_buffer[: al.frames][POLICY_VERSION_KEY].squeeze(-1)
    for version, n in written_at.items():
        # a push returns once the actor acts with it: apart from the one batch in flight, every
        # later frame comes from that version or a newer one
        assert (versions[n + fpb :] >= version).all(), (version, versions[n : n + 3 * fpb])
    assert al.actor_version() == al.version
    assert al.policy_lag(140) == 0


def test_bad_arguments_are_rejected():
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(10), shared=True)
    with pytest.raises(ValueError, match="num_actors"):
        ActorLearner(make_env, make_policy(), rb, num_actors=0)
    with pytest.raises(ValueError, match="frames_per_batch"):
        ActorLearner(make_env, make_policy(), rb, frames_per_batch=1, num_actors=2)
