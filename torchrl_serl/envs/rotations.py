"""Rotation math for the whole package: the arm drivers, the safety layer and the pose transforms.

Quaternions are ``[..., 4]`` = ``[x, y, z, w]`` (scalar last), as ``ArmState.tcp_quat``, franky's
``Affine.quaternion``, SciPy and SERL use; :func:`to_xyzw`/:func:`from_xyzw` convert MuJoCo's
``wxyz``. Euler angles are ``[..., 3]`` = roll, pitch, yaw [rad] of ``R = Rz(yaw) Ry(pitch) Rx(roll)``:
extrinsic x-y-z (SciPy's ``as_euler("xyz")``, SERL's ``Quat2EulerWrapper``), which is also the
intrinsic Z-Y-X the Piper firmware reports as ``RX, RY, RZ``.

Every function takes NumPy arrays (sequences are read as float64) or torch tensors (any float dtype
and device, differentiable) with any leading batch shape, and returns the same kind.
"""

from __future__ import annotations

import numpy as np
import torch

QUAT_ORDERS = ("xyzw", "wxyz")


def _array(x):
    return x if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def _stack(parts: list, like):
    return torch.stack(parts, -1) if isinstance(like, torch.Tensor) else np.stack(parts, -1)


def _norm(x):
    """Euclidean norm over the last axis, kept as a size-1 axis."""
    if isinstance(x, torch.Tensor):
        return torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return np.linalg.norm(x, axis=-1, keepdims=True)


def _cross(a, b):
    return torch.linalg.cross(a, b, dim=-1) if isinstance(a, torch.Tensor) else np.cross(a, b)


def _lib(x):
    return torch if isinstance(x, torch.Tensor) else np


def _check_order(order: str) -> None:
    if order not in QUAT_ORDERS:
        raise ValueError(f"quaternion order must be one of {QUAT_ORDERS}, got {order!r}")


def to_xyzw(quat, order: str):
    """Reorder a ``[..., 4]`` quaternion given in ``order`` (``"xyzw"`` or ``"wxyz"``) to xyzw."""
    _check_order(order)
    quat = _array(quat)
    return quat if order == "xyzw" else quat[..., [1, 2, 3, 0]]


def from_xyzw(quat, order: str):
    """Reorder a ``[..., 4]`` xyzw quaternion to ``order`` (``"xyzw"`` or ``"wxyz"``)."""
    _check_order(order)
    quat = _array(quat)
    return quat if order == "xyzw" else quat[..., [3, 0, 1, 2]]


def normalize_quat(quat):
    """Unit quaternion ``[..., 4]`` with ``w >= 0`` (one representative of ``q`` and ``-q``).

    Raises ``ValueError`` naming the quaternion when it is not finite or has zero norm.
    """
    q = _array(quat)
    if q.shape[-1:] != (4,):
        raise ValueError(f"a quaternion has 4 entries [x, y, z, w], got shape {tuple(q.shape)}")
    norm = _norm(q)
    lib = _lib(q)
    if bool((~lib.isfinite(norm) | (norm < 1e-9)).any()):
        raise ValueError(f"quaternion {q.tolist()} is not finite or has zero norm")
    q = q / norm
    return lib.where(q[..., 3:] < 0, -q, q)


def quat_mul(a, b):
    """Hamilton product ``a * b`` of ``[..., 4]`` quaternions (rotate by ``b`` first, then by ``a``)."""
    a, b = _array(a), _array(b)
    ax, ay, az, aw = (a[..., i] for i in range(4))
    bx, by, bz, bw = (b[..., i] for i in range(4))
    return _stack([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ], a)


def quat_conj(quat):
    """Conjugate of ``[..., 4]`` quaternions: the inverse rotation of a unit quaternion."""
    q = _array(quat)
    return _stack([-q[..., 0], -q[..., 1], -q[..., 2], q[..., 3]], q)


def quat_rotate(quat, vec):
    """Rotate ``[..., 3]`` vectors by ``[..., 4]`` unit quaternions."""
    q, v = _array(quat), _array(vec)
    u, w = q[..., :3], q[..., 3:]
    t = 2 * _cross(u, v)
    return v + w * t + _cross(u, t)


def quat_angle(a, b):
    """Rotation angle [rad] in ``[0, pi]`` that takes ``a`` to ``b`` (``[..., 4]`` each; a float for one pair)."""
    a, b = normalize_quat(a), normalize_quat(b)
    lib = _lib(a)
    return 2.0 * lib.arccos(lib.clip(abs((a * b).sum(-1)), None, 1.0))


def quat_slerp(a, b, t):
    """Spherical interpolation from ``a`` (``t = 0``) to ``b`` (``t = 1``) along the short arc, as unit quaternions."""
    a, b = normalize_quat(a), normalize_quat(b)
    lib = _lib(a)
    dot = (a * b).sum(-1)[..., None]
    b = lib.where(dot < 0, -b, b)
    dot = abs(dot)
    # Nearly parallel: linear interpolation is exact enough and avoids dividing by sin(theta) ~ 0.
    linear = dot > 0.9995
    theta = lib.arccos(lib.clip(dot, None, 1.0))
    sin_theta = lib.where(linear, 1.0, lib.sin(theta))
    weight_a = lib.where(linear, 1.0 - t, lib.sin((1.0 - t) * theta) / sin_theta)
    weight_b = lib.where(linear, t, lib.sin(t * theta) / sin_theta)
    return normalize_quat(weight_a * a + weight_b * b)


def rotvec_to_quat(rotvec):
    """Rotation vector ``[..., 3]`` (axis * angle, rad) -> ``[..., 4]`` quaternion."""
    v = _array(rotvec)
    lib = _lib(v)
    angle = _norm(v)
    # sin(x/2)/x -> 1/2 as x -> 0; the series keeps the small-angle case exact and differentiable.
    small = angle < 1e-6
    scale = lib.where(small, 0.5 - angle**2 / 48, lib.sin(angle / 2) / lib.clip(angle, 1e-12, None))
    return (torch.cat if lib is torch else np.concatenate)([v * scale, lib.cos(angle / 2)], -1)


def euler_xyz_to_quat(rpy):
    """``[..., 3]`` roll, pitch, yaw [rad] -> unit ``[..., 4]`` quaternion of ``Rz(yaw) Ry(pitch) Rx(roll)`` (``w >= 0``)."""
    e = _array(rpy)
    lib = _lib(e)
    cr, sr = lib.cos(e[..., 0] / 2), lib.sin(e[..., 0] / 2)
    cp, sp = lib.cos(e[..., 1] / 2), lib.sin(e[..., 1] / 2)
    cy, sy = lib.cos(e[..., 2] / 2), lib.sin(e[..., 2] / 2)
    return normalize_quat(_stack([
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
        cr * cp * cy + sr * sp * sy,
    ], e))


def quat_to_euler_xyz(quat):
    """Unit ``[..., 4]`` quaternion -> ``[..., 3]`` roll, pitch, yaw [rad] (inverse of :func:`euler_xyz_to_quat`).

    Roll and yaw are in ``[-pi, pi]``, pitch in ``[-pi/2, pi/2]``; ``q`` and ``-q`` give the same angles.
    Normalise first (:func:`normalize_quat`) where the input may not be unit.
    """
    q = _array(quat)
    lib = _lib(q)
    x, y, z, w = (q[..., i] for i in range(4))
    roll = lib.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = lib.arcsin(lib.clip(2 * (w * y - z * x), -1.0, 1.0))
    yaw = lib.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return _stack([roll, pitch, yaw], q)
