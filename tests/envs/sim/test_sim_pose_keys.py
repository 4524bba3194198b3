"""The simulated task's pose keys (the pose wrappers' input) agree with the simulator's tool pose."""

import mujoco
import numpy as np
import pytest
import torch
from torchrl.envs.utils import check_env_specs

from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv


def test_pose_keys_report_the_tool_pose_in_xyzw():
    env = PandaPickCubeEnv(pixels=True, image_size=16, seed=0, pose_keys=True)
    check_env_specs(env)
    td = env.step(env.reset().set("action", torch.tensor([0.5, -0.5, 0.2, 1.0])))["next"]
    quat_wxyz = np.zeros(4)
    mujoco.mju_mat2Quat(quat_wxyz, env.data.site_xmat[env._tcp_id])
    np.testing.assert_allclose(td["tcp_pose"][:3].numpy(), env.tcp_pos(), atol=1e-6)
    np.testing.assert_allclose(td["tcp_pose"][3:].numpy(), quat_wxyz[[1, 2, 3, 0]], atol=1e-6)
    # the other two are the observation's own entries
    assert torch.equal(td["tcp_vel"], td["observation"][3:6]) and torch.equal(td["gripper"], td["observation"][6:])
    env.close()


def test_pose_keys_need_the_proprioceptive_observation():
    with pytest.raises(ValueError, match="holds the cube"):
        PandaPickCubeEnv(pixels=False, seed=0, pose_keys=True)
