"""Replace the quaternion of a pose observation by Euler angles (SERL's Quat2EulerWrapper)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.utils import NestedKey
from torchrl.data import Composite, Unbounded
from torchrl.envs.transforms import ObservationTransform

from torchrl_serl.envs.rotations import quat_to_euler_xyz, to_xyzw


class QuatToEuler(ObservationTransform):
    """``[*B, 7]`` pose (xyz m + quaternion) -> ``[*B, 6]`` pose (xyz m + roll, pitch, yaw rad).

    Euler angles are extrinsic x-y-z (scipy's ``as_euler("xyz")``, as SERL), in ``[-pi, pi]`` for roll
    and yaw and ``[-pi/2, pi/2]`` for pitch. Works on env outputs and on replay-buffer batches.

    Args:
        in_keys: pose keys, each ``[*B, 7]`` (default ``["tcp_pose"]``).
        out_keys: where to write the ``[*B, 6]`` poses (default: overwrite ``in_keys``).
        quat_order: ``"wxyz"`` (MuJoCo) or ``"xyzw"`` (scipy, SERL).
    """

    def __init__(
        self,
        in_keys: Sequence[NestedKey] = ("tcp_pose",),
        out_keys: Sequence[NestedKey] | None = None,
        quat_order: str = "wxyz",
    ):
        in_keys = list(in_keys)
        super().__init__(in_keys=in_keys, out_keys=list(out_keys) if out_keys is not None else in_keys)
        to_xyzw(torch.zeros(4), quat_order)  # validates the order early
        self.quat_order = quat_order

    def _apply_transform(self, pose: torch.Tensor) -> torch.Tensor:
        if pose.shape[-1] != 7:
            raise ValueError(f"QuatToEuler expects [*B, 7] poses (xyz + quaternion), got shape {tuple(pose.shape)}")
        quat = torch.nn.functional.normalize(to_xyzw(pose[..., 3:], self.quat_order), dim=-1)
        return torch.cat([pose[..., :3], quat_to_euler_xyz(quat)], -1)

    def _reset(self, tensordict, tensordict_reset):
        return self._call(tensordict_reset)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        for in_key, out_key in zip(self.in_keys, self.out_keys):
            spec = observation_spec[in_key]
            observation_spec[out_key] = Unbounded((*spec.shape[:-1], 6), device=spec.device, dtype=spec.dtype)
        return observation_spec
