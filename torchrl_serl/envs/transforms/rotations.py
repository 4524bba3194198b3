"""Batched quaternion helpers (``[*B, 4]``, scalar-first ``wxyz`` like MuJoCo; rotations in rad)."""

from __future__ import annotations

import torch


def to_wxyz(quat: torch.Tensor, order: str) -> torch.Tensor:
    """Reorder a ``[*B, 4]`` quaternion given in ``order`` ("wxyz" or "xyzw") to wxyz."""
    if order == "wxyz":
        return quat
    if order == "xyzw":
        return quat[..., [3, 0, 1, 2]]
    raise ValueError(f"quaternion order must be 'wxyz' or 'xyzw', got {order!r}")


def from_wxyz(quat: torch.Tensor, order: str) -> torch.Tensor:
    """Reorder a ``[*B, 4]`` wxyz quaternion to ``order`` ("wxyz" or "xyzw")."""
    if order == "wxyz":
        return quat
    if order == "xyzw":
        return quat[..., [1, 2, 3, 0]]
    raise ValueError(f"quaternion order must be 'wxyz' or 'xyzw', got {order!r}")


def quat_conj(q: torch.Tensor) -> torch.Tensor:
    """Inverse of a unit quaternion ``[*B, 4]`` (wxyz)."""
    return torch.cat([q[..., :1], -q[..., 1:]], -1)


def quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b`` of ``[*B, 4]`` wxyz quaternions (apply ``b`` first, then ``a``)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate ``[*B, 3]`` vectors by ``[*B, 4]`` wxyz unit quaternions."""
    w, u = q[..., :1], q[..., 1:]
    t = 2 * torch.cross(u, v, dim=-1)
    return v + w * t + torch.cross(u, t, dim=-1)


def rotvec_to_quat(rotvec: torch.Tensor) -> torch.Tensor:
    """Rotation vector ``[*B, 3]`` (axis * angle, rad) -> ``[*B, 4]`` wxyz quaternion."""
    angle = rotvec.norm(dim=-1, keepdim=True)
    # sin(x/2)/x -> 1/2 as x -> 0; the series keeps the small-angle case exact and differentiable.
    small = angle < 1e-6
    scale = torch.where(small, 0.5 - angle**2 / 48, torch.sin(angle / 2) / angle.clamp_min(1e-12))
    return torch.cat([torch.cos(angle / 2), rotvec * scale], -1)


def quat_to_euler_xyz(q: torch.Tensor) -> torch.Tensor:
    """``[*B, 4]`` wxyz -> ``[*B, 3]`` (roll, pitch, yaw) rad, extrinsic x-y-z (scipy's ``as_euler("xyz")``)."""
    w, x, y, z = q.unbind(-1)
    roll = torch.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = torch.asin((2 * (w * y - z * x)).clamp(-1.0, 1.0))
    yaw = torch.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return torch.stack([roll, pitch, yaw], -1)
