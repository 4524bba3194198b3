"""SERL's pose wrappers on a real-arm env (the Piper over its CAN double): the recipes' relative
frame (``EnvConfig.relative_pose``) makes the reset pose the origin and moves the arm along the
reset tool frame."""
import struct

import numpy as np
import torch
from torchrl.envs.utils import check_env_specs

from torchrl_serl.envs.rotations import quat_rotate
from torchrl_serl.training.config import EnvConfig
from torchrl_serl.training.env_factory import with_relative_pose


def test_piper_env_in_the_relative_frame(piper_double, can_channel):
    from torchrl_serl.envs.robots.arm_env import PiperEnv

    env = with_relative_pose(
        PiperEnv(can_channel, bustype="virtual", seed=0, max_episode_steps=4, action_scale_m=0.02, pose_keys=True),
        EnvConfig(relative_pose=True),
    )
    try:
        check_env_specs(env)
        td = env.reset()
        # at reset the tool is the origin of the frame: zero position, angles and velocity
        assert td["observation"].shape == (10,)
        np.testing.assert_allclose(td["observation"][:6].numpy(), 0.0, atol=1e-4)
        origin = td["tcp_pose_origin"].double().numpy()  # base frame, xyzw
        base = env.base_env
        measured = []
        clip = base.safety.clip

        def recording_clip(pos, quat, current_pos, current_quat):
            measured.append(np.array(current_pos))  # the pose the env read just before commanding
            return clip(pos, quat, current_pos, current_quat)

        base.safety.clip = recording_clip
        piper_double.clear_received()
        out = env.step(td.set("action", torch.tensor([1.0, 0.0, 0.0, 0.0])))
        # +x of the reset tool frame, in the base frame: the commanded target moved along it
        xy, zrx = (struct.unpack(">ii", piper_double.frames(i)[0]) for i in (0x152, 0x153))
        expected = measured[0] + quat_rotate(origin[3:], np.array([0.02, 0.0, 0.0]))
        np.testing.assert_allclose(np.array([xy[0], xy[1], zrx[0]]) / 1e6, expected, atol=2e-6)
        # ... and the observation reports the move in the reset frame
        rel = out["next", "observation"][:3].double().numpy()
        now = base.arm.get_state().tcp_pos - origin[:3]
        np.testing.assert_allclose(rel, quat_rotate(np.array([-1, -1, -1, 1]) * origin[3:], now), atol=3e-3)
    finally:
        env.close()
