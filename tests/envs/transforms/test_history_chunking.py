"""Observation history and action chunking come from TorchRL (CatFrames, MultiAction): check they fit our envs."""

import torch
from torchrl.envs import CatFrames, Compose, MultiAction, TransformedEnv, UnsqueezeTransform
from torchrl.envs.utils import check_env_specs

from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv
from torchrl_serl.envs.transforms.random_shift import RandomShift


def test_catframes_history_on_state_and_pixels():
    env = TransformedEnv(
        PandaPickCubeEnv(pixels=True, image_size=16, seed=0),
        Compose(
            RandomShift(["front"], generator=torch.Generator().manual_seed(0)),
            UnsqueezeTransform(-2, in_keys=["observation"]),
            CatFrames(N=2, dim=-2, in_keys=["observation"]),
            CatFrames(N=2, dim=-3, in_keys=["front", "wrist"]),  # stacks channels: [6, H, W]
        ),
    )
    check_env_specs(env)
    td = env.rollout(3)
    assert td["observation"].shape == (3, 2, 7) and td["front"].shape == (3, 6, 16, 16)
    # history: the older slot of step t+1 is the newer slot of step t
    assert torch.equal(td["next", "observation"][1:, 0], td["next", "observation"][:-1, 1])
    env.close()


def test_multiaction_chunks_execute_in_order():
    base = PandaPickCubeEnv(seed=0)
    env = TransformedEnv(base, MultiAction(stack_rewards=False))
    td = env.reset()
    chunk = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 0]])  # two +x steps, then hold
    x0 = base.tcp_target[0]
    env.step(td.set("action", chunk))
    assert abs(base.tcp_target[0] - min(x0 + 0.2, 0.6)) < 1e-6  # 0.1 m per unit, clipped to the box
    env.close()
