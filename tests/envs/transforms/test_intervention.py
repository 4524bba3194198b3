import queue

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import check_env_specs

from toy_arm_env import ToyArmEnv
from torchrl_serl.envs.input_devices.keyboard import KeyboardSource
from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv
from torchrl_serl.envs.transforms.intervention import Intervention


def test_keyboard_intervention_on_env_and_rollout():
    keys = queue.Queue()
    env = TransformedEnv(ToyArmEnv(), Intervention(KeyboardSource(keys, key_map={"w": (1, 0, 0, 0, 0, 0, 0), "c": (0,) * 6 + (1,)})))
    check_env_specs(env)

    calls = {"n": 0}

    def pressing_policy(td):
        # the operator presses "w" and "c" while the 2nd action is computed; "x" is not mapped
        calls["n"] += 1
        if calls["n"] == 2:
            for k in "wcx":
                keys.put(k)
        return td.set("action", torch.full((7,), -0.5))

    rollout = env.rollout(4, pressing_policy)
    assert rollout["next", "intervention"].squeeze(-1).tolist() == [False, True, False, False]
    torch.testing.assert_close(rollout["action"][1], torch.tensor([1.0, 0, 0, 0, 0, 0, 1]))
    torch.testing.assert_close(rollout["action"][2], torch.full((7,), -0.5))
    torch.testing.assert_close(rollout["next", "policy_action"][1], torch.full((7,), -0.5))


def test_bad_intervention_action_raises():
    class Wrong:
        def poll(self):
            return torch.tensor([float("nan"), 0, 0, 0])

    env = TransformedEnv(PandaPickCubeEnv(seed=0), Intervention(Wrong()))
    td = env.reset().set("action", torch.zeros(4))
    with pytest.raises(ValueError, match="finite with 4 entries"):
        env.step(td)
    env.close()
