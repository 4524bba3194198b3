"""Quaternion helpers shared by the arm drivers and the safety layer.

Quaternions are ``[x, y, z, w]`` (scalar last), as franky's ``Affine.quaternion`` and
SciPy use. Euler angles are the ``ZYX`` convention (``R = Rz(yaw) Ry(pitch) Rx(roll)``)
that the Piper firmware reports as ``RX, RY, RZ``.
"""
from __future__ import annotations

import numpy as np


def normalize_quat(quat) -> np.ndarray:
    """Unit quaternion ``[4]`` with ``w >= 0`` (one representative of ``q`` and ``-q``)."""
    q = np.asarray(quat, dtype=np.float64).reshape(4)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"quaternion {q.tolist()} is not finite or has zero norm")
    q = q / norm
    return -q if q[3] < 0 else q


def quat_multiply(a, b) -> np.ndarray:
    """Hamilton product ``a * b`` of two ``[x, y, z, w]`` quaternions."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ])


def quat_conjugate(q) -> np.ndarray:
    return np.array([-q[0], -q[1], -q[2], q[3]])


def quat_angle(a, b) -> float:
    """Rotation angle [rad] in ``[0, pi]`` that takes ``a`` to ``b``."""
    dot = abs(float(np.dot(normalize_quat(a), normalize_quat(b))))
    return 2.0 * float(np.arccos(min(1.0, dot)))


def quat_slerp(a, b, t: float) -> np.ndarray:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1) along the short arc."""
    a, b = normalize_quat(a), normalize_quat(b)
    dot = float(np.dot(a, b))
    if dot < 0.0:
        b, dot = -b, -dot
    if dot > 0.9995:  # nearly parallel: linear interpolation is exact enough and stable
        return normalize_quat(a + t * (b - a))
    theta = np.arccos(dot)
    return normalize_quat((np.sin((1 - t) * theta) * a + np.sin(t * theta) * b) / np.sin(theta))


def euler_zyx_to_quat(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """``[x, y, z, w]`` of ``Rz(yaw) Ry(pitch) Rx(roll)``; angles in rad."""
    cr, sr = np.cos(roll / 2), np.sin(roll / 2)
    cp, sp = np.cos(pitch / 2), np.sin(pitch / 2)
    cy, sy = np.cos(yaw / 2), np.sin(yaw / 2)
    return normalize_quat([
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
        cr * cp * cy + sr * sp * sy,
    ])


def quat_to_euler_zyx(quat) -> np.ndarray:
    """``[roll, pitch, yaw]`` [rad] of a ``[x, y, z, w]`` quaternion (inverse of ``euler_zyx_to_quat``)."""
    x, y, z, w = normalize_quat(quat)
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0))
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.array([roll, pitch, yaw])
