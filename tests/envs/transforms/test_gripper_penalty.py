"""GripperPenalty judged by the command (HIL-SERL's grasp penalty): the transition that asks for a
toggle pays, on a batch and on the simulated pixel task, and the reward can be left alone."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import check_env_specs

from torchrl_serl.envs.transforms.gripper_penalty import GripperPenalty


def test_command_penalty_only_where_the_command_changes_the_state():
    closed_before = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    command = torch.tensor([1.0, -1.0, -1.0, 1.0, 0.0, 0.0])
    batch = TensorDict(
        observation=torch.cat([torch.zeros(6, 6), closed_before[:, None]], -1),
        action=torch.cat([torch.zeros(6, 3), command[:, None]], -1),
        next=TensorDict(observation=torch.zeros(6, 7), reward=torch.ones(6, 1), batch_size=[6]),
        batch_size=[6],
    )
    out = GripperPenalty(0.02, index=-1, penalty_key="grasp_penalty", judge="command", apply_to_reward=False)(batch)
    # close while open, open while closed: charged; the rest (and the observed next state) is not
    assert out["next", "grasp_penalty"].squeeze(-1).tolist() == pytest.approx([0.02, 0, 0.02, 0, 0, 0])
    assert out["next", "reward"].squeeze(-1).tolist() == [1.0] * 6
    with pytest.raises(ValueError, match="judge"):
        GripperPenalty(judge="intent")


def test_command_penalty_on_the_simulated_pixel_task():
    from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv

    def rollout(transform):
        env = PandaPickCubeEnv(pixels=True, image_size=16, seed=0)
        env = TransformedEnv(env, transform) if transform is not None else env
        if transform is not None:
            check_env_specs(env)
        td, steps = env.reset(), []
        for g in [1.0, 1.0, -1.0, 0.0]:  # close (toggle), close again (closed already), open (toggle), stay
            out = env.step(td.set("action", torch.tensor([0.0, 0.0, 0.0, g])))
            steps.append(out["next"])
            td = out["next"]
        env.close()
        return steps

    penalised = rollout(GripperPenalty(0.5, index=-1, judge="command"))
    plain = rollout(None)
    assert [s["gripper_penalty"].item() for s in penalised] == pytest.approx([0.5, 0.0, 0.5, 0.0])
    charged = [p["reward"].item() - q["reward"].item() for p, q in zip(penalised, plain)]
    assert charged == pytest.approx([-0.5, 0.0, -0.5, 0.0], abs=1e-4)
