"""SERL's relative env: end-effector pose, velocity and actions expressed in the frame of the pose at reset."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import Composite, Unbounded
from torchrl.envs.transforms import Transform

from torchrl_serl.envs.rotations import from_xyzw, quat_conj, quat_mul, quat_rotate, to_xyzw


def _next(key: NestedKey) -> tuple:
    return ("next", *((key,) if isinstance(key, str) else key))


class RelativeFrame(Transform):
    """Express ``tcp_pose``/``tcp_vel`` in the frame of the end-effector pose at reset; map actions back.

    At reset the raw base-frame pose ``T_o`` (``pose_key``, ``[*B, 7]`` = xyz m + quaternion) is stored
    under ``origin_key`` (an extra observation, so the transform is stateless and also works on
    replay-buffer batches and partial resets). Then, with ``R_o`` the rotation of ``T_o``:

    - pose: ``p_rel = R_o^T (p - p_o)``, ``q_rel = q_o^-1 q`` (the pose at reset becomes identity);
    - velocity ``[*B, 6]`` (m/s, rad/s) or ``[*B, 3]``: each 3-vector rotated by ``R_o^T``;
    - action (inverse): ``action[..., :3]`` (xyz delta) and, for ``[*B, >=7]`` actions,
      ``action[..., 3:6]`` (rotation vector) are rotated by ``R_o`` into the base frame; the remaining
      entries (gripper) pass through. Action bounds are kept: the base env clips what leaves the box.

    Args:
        pose_key: raw end-effector pose, ``[*B, 7]``.
        vel_key: end-effector velocity ``[*B, 6]`` or ``[*B, 3]``; ``None`` to leave velocities alone.
        action_key: action in the relative frame.
        origin_key: where the reset pose (base frame) is kept.
        quat_order: ``"wxyz"`` (MuJoCo) or ``"xyzw"`` (scipy, SERL).
    """

    def __init__(
        self,
        pose_key: NestedKey = "tcp_pose",
        vel_key: NestedKey | None = "tcp_vel",
        action_key: NestedKey = "action",
        origin_key: NestedKey = "tcp_pose_origin",
        quat_order: str = "wxyz",
    ):
        in_keys = [pose_key] + ([vel_key] if vel_key is not None else [])
        super().__init__(in_keys=in_keys, out_keys=in_keys, in_keys_inv=[action_key], out_keys_inv=[action_key])
        to_xyzw(torch.zeros(4), quat_order)  # validates the order early
        self.pose_key, self.vel_key, self.action_key, self.origin_key = pose_key, vel_key, action_key, origin_key
        self.quat_order = quat_order

    def _split(self, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if pose.shape[-1] != 7:
            raise ValueError(f"{self.pose_key!r} must be [*B, 7] (xyz + quaternion), got shape {tuple(pose.shape)}")
        return pose[..., :3], torch.nn.functional.normalize(to_xyzw(pose[..., 3:], self.quat_order), dim=-1)

    def _relative(self, td: TensorDictBase, origin: torch.Tensor, prefix=lambda k: k) -> None:
        p_o, q_o = self._split(origin)
        q_inv = quat_conj(q_o)
        p, q = self._split(td.get(prefix(self.pose_key)))
        pose = torch.cat([quat_rotate(q_inv, p - p_o), from_xyzw(quat_mul(q_inv, q), self.quat_order)], -1)
        td.set(prefix(self.pose_key), pose)
        if self.vel_key is not None:
            vel = td.get(prefix(self.vel_key))
            if vel.shape[-1] not in (3, 6):
                raise ValueError(f"{self.vel_key!r} must be [*B, 3] or [*B, 6], got shape {tuple(vel.shape)}")
            parts = [quat_rotate(q_inv, v) for v in vel.split(3, -1)]
            td.set(prefix(self.vel_key), torch.cat(parts, -1))

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        origin = tensordict_reset.get(self.pose_key).clone()
        reset = tensordict.get("_reset", None) if tensordict is not None else None
        previous = tensordict.get(self.origin_key, None) if tensordict is not None else None
        if reset is not None and previous is not None:
            # Partial reset of a batched env: only the envs being reset get a new origin.
            mask = reset.reshape(*reset.shape[: origin.ndim - 1], -1).any(-1, keepdim=True)
            origin = torch.where(mask, origin, previous)
        tensordict_reset.set(self.origin_key, origin)
        self._relative(tensordict_reset, origin)
        return tensordict_reset

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        origin = tensordict.get(self.origin_key)
        next_tensordict.set(self.origin_key, origin)
        self._relative(next_tensordict, origin)
        return next_tensordict

    def _inv_call(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get(self.action_key, None)
        origin = tensordict.get(self.origin_key, None)
        if action is None or origin is None:
            if self.missing_tolerance:
                return tensordict
            raise KeyError(f"RelativeFrame needs {self.action_key!r} and {self.origin_key!r} to map actions to the base frame")
        return tensordict.set(self.action_key, self.to_base_action(action, origin))

    def to_base_action(self, action: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
        """Map a ``[*B, A]`` relative-frame action to the base frame, given the ``[*B, 7]`` reset pose."""
        _, q_o = self._split(origin)
        n_rot = 2 if action.shape[-1] >= 7 else 1
        parts = [quat_rotate(q_o, action[..., 3 * i : 3 * i + 3]) for i in range(n_rot)]
        return torch.cat([*parts, action[..., 3 * n_rot :]], -1)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Make the raw base-frame poses of a batch relative (root and ``next``) using its ``origin_key``."""
        origin = tensordict.get(self.origin_key, None)
        if origin is None:
            raise KeyError(f"RelativeFrame.forward needs the reset pose under {self.origin_key!r}")
        self._relative(tensordict, origin)
        if _next(self.pose_key) in tensordict.keys(True, True):
            self._relative(tensordict, origin, prefix=_next)
        return tensordict

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        pose_spec = observation_spec[self.pose_key]
        observation_spec[self.pose_key] = Unbounded(pose_spec.shape, device=pose_spec.device, dtype=pose_spec.dtype)
        observation_spec[self.origin_key] = Unbounded(pose_spec.shape, device=pose_spec.device, dtype=pose_spec.dtype)
        if self.vel_key is not None:
            vel_spec = observation_spec[self.vel_key]
            observation_spec[self.vel_key] = Unbounded(vel_spec.shape, device=vel_spec.device, dtype=vel_spec.dtype)
        return observation_spec
