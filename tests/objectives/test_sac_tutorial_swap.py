"""TorchRL's SAC tutorial with one line changed: ``SACLoss(actor, qnet, num_qvalue_nets=10)`` ->
``SERLSACLoss(actor, qnet, num_critics=10)``; stock actor, critic, collector, buffer and updater."""

import pytest
import torch
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.envs import GymEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import SoftUpdate

from torchrl_serl.objectives import SERLSACLoss


def make_actor_critic(env):
    n_obs, n_act = env.observation_spec["observation"].shape[-1], env.action_spec.shape[-1]
    actor_net = nn.Sequential(MLP(n_obs, 2 * n_act, num_cells=[64, 64], activation_class=nn.ReLU), NormalParamExtractor())
    actor = ProbabilisticActor(
        TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=env.action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": env.action_spec.space.low, "high": env.action_spec.space.high},
    )
    qnet = ValueOperator(
        MLP(n_obs + n_act, 1, num_cells=[64, 64], activation_class=nn.ReLU), in_keys=["observation", "action"]
    )
    return actor, qnet


def train(actor, qnet, env, frames: int, init_random: int = 500, utd: int = 2) -> None:
    loss = SERLSACLoss(actor, qnet, num_critics=10)  # the swap: SACLoss(actor, qnet, num_qvalue_nets=10)
    loss.make_value_estimator(gamma=0.99)
    updater = SoftUpdate(loss, tau=0.005)
    optim = torch.optim.Adam(loss.parameters(), lr=1e-3)
    buffer = ReplayBuffer(storage=LazyTensorStorage(frames), batch_size=256)
    collector = Collector(env, actor, frames_per_batch=50, total_frames=frames, init_random_frames=init_random)
    for data in collector:
        buffer.extend(data)
        if len(buffer) < init_random:
            continue
        for _ in range(utd * data.numel()):
            out = loss(buffer.sample())
            (out["loss_qvalue"] + out["loss_actor"] + out["loss_alpha"]).backward()
            optim.step()
            optim.zero_grad()
            updater.step()
    collector.shutdown()


def evaluate(actor, seed: int, episodes: int = 4) -> float:
    env = GymEnv("Pendulum-v1")
    env.set_seed(seed)
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        returns = [env.rollout(200, actor)["next", "reward"].sum().item() for _ in range(episodes)]
    env.close()
    return sum(returns) / episodes


@pytest.mark.slow
def test_tutorial_swap_learns_pendulum():
    torch.manual_seed(0)
    env = GymEnv("Pendulum-v1")
    env.set_seed(0)
    actor, qnet = make_actor_critic(env)
    untrained = evaluate(actor, seed=100)
    train(actor, qnet, env, frames=2000)  # 3000 updates; this seed: about -450
    trained = evaluate(actor, seed=100)
    # Pendulum-v1: about -1200 untrained, -150 solved.
    assert untrained < -900, f"untrained policy scored {untrained:.0f}: the threshold would not test learning"
    assert trained > -800 and trained > untrained + 400, f"eval return {untrained:.0f} -> {trained:.0f}"
