"""A tiny deterministic end-effector env for transform tests (no MuJoCo: transforms only see tensors)."""

from __future__ import annotations

import math

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs import EnvBase


def quat_from_axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """``[*B, 3]`` unit axis, ``[*B]`` angle (rad) -> ``[*B, 4]`` quaternion wxyz."""
    half = angle[..., None] / 2
    return torch.cat([half.cos(), axis * half.sin()], -1)


class ToyArmEnv(EnvBase):
    """Point end effector with orientation and two cameras.

    Observations: ``tcp_pose`` [7] (xyz m + quat wxyz), ``tcp_vel`` [6] (m/s, rad/s), ``gripper`` [1],
    ``observation`` [7] (tcp_pos, tcp_vel, gripper), ``front``/``wrist`` uint8 [3, 16, 16].
    Action [7] in [-1, 1]: dxyz (x 0.1 m), rotation vector (x 0.2 rad), gripper command (> 0 closes).
    """

    dt = 0.1

    def __init__(self, seed: int = 0, image_size: int = 16):
        super().__init__(batch_size=[])
        self.image_size = image_size
        self._gen = torch.Generator().manual_seed(seed)
        self.observation_spec = Composite(
            tcp_pose=Unbounded(7),
            tcp_vel=Unbounded(6),
            gripper=Bounded(0.0, 1.0, (1,)),
            observation=Unbounded(7),
            front=Bounded(0, 255, (3, image_size, image_size), dtype=torch.uint8),
            wrist=Bounded(0, 255, (3, image_size, image_size), dtype=torch.uint8),
        )
        self.action_spec = Bounded(-1.0, 1.0, (7,))
        self.reward_spec = Unbounded(1)

    def _obs(self) -> TensorDict:
        s = self.image_size
        images = torch.randint(0, 256, (2, 3, s, s), generator=self._gen, dtype=torch.uint8)
        return TensorDict(
            tcp_pose=torch.cat([self.pos, self.quat]),
            tcp_vel=self.vel.clone(),
            gripper=self.grip.clone(),
            observation=torch.cat([self.pos, self.vel[:3], self.grip]),
            front=images[0],
            wrist=images[1],
        )

    def _reset(self, tensordict: TensorDictBase | None, **kwargs) -> TensorDictBase:
        self.pos = torch.rand(3, generator=self._gen) * 0.2 + torch.tensor([0.3, -0.1, 0.1])
        axis = torch.nn.functional.normalize(torch.randn(3, generator=self._gen), dim=0)
        self.quat = quat_from_axis_angle(axis, torch.rand((), generator=self._gen) * math.pi)
        self.vel = torch.zeros(6)
        self.grip = torch.zeros(1)
        out = self._obs()
        out.update(TensorDict(done=torch.zeros(1, dtype=torch.bool), terminated=torch.zeros(1, dtype=torch.bool)))
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        from torchrl_serl.envs.rotations import from_xyzw, quat_mul, rotvec_to_quat, to_xyzw

        action = tensordict["action"].clamp(-1, 1)
        dpos, drot = action[:3] * 0.1, action[3:6] * 0.2
        self.pos = self.pos + dpos
        self.quat = from_xyzw(quat_mul(rotvec_to_quat(drot), to_xyzw(self.quat, "wxyz")), "wxyz")
        self.vel = torch.cat([dpos, drot]) / self.dt
        self.grip = (action[6:] > 0).float()
        out = self._obs()
        out.update(
            TensorDict(
                reward=-self.pos.norm().reshape(1),
                done=torch.zeros(1, dtype=torch.bool),
                terminated=torch.zeros(1, dtype=torch.bool),
            )
        )
        return out

    def _set_seed(self, seed: int | None) -> None:
        self._gen.manual_seed(0 if seed is None else seed)
