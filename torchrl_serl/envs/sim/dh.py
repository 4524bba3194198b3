"""Build a serial arm in a ``mujoco.MjSpec`` from modified (Craig) Denavit-Hartenberg parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import mujoco
import numpy as np

from torchrl_serl.envs.rotations import from_xyzw, quat_mul, rotvec_to_quat

# Arm geoms collide with the world (floor, cube: contype 1) but not with each other: the capsule
# approximation of neighbouring links overlaps where the real meshes do not.
ARM_CONTYPE, ARM_CONAFFINITY = 2, 1


@dataclass(frozen=True)
class DHLink:
    """One revolute joint in modified DH: ``RotX(alpha) TransX(a) RotZ(theta_offset + q) TransZ(d)``.

    Lengths in m, angles in rad, mass in kg, inertia in kg m^2 about the COM in the link frame
    (``fullinertia`` order ``ixx iyy izz ixy ixz iyz``).
    """

    a: float
    alpha: float
    d: float
    theta_offset: float
    q_range: tuple[float, float]
    mass: float
    com: tuple[float, float, float]
    inertia: tuple[float, float, float, float, float, float]
    radius: float = 0.04


def axis_quat(axis: str, angle: float) -> np.ndarray:
    """MuJoCo quaternion (w, x, y, z) of a rotation by ``angle`` rad about the x, y or z axis."""
    return from_xyzw(rotvec_to_quat(np.eye(3)["xyz".index(axis)] * angle), "wxyz")


def dh_frame(link: DHLink) -> tuple[np.ndarray, np.ndarray]:
    """Position and MuJoCo (wxyz) quaternion of link ``i`` in link ``i-1`` at ``q = 0``."""
    pos = np.array([link.a, -np.sin(link.alpha) * link.d, np.cos(link.alpha) * link.d])
    quat = quat_mul(rotvec_to_quat([link.alpha, 0.0, 0.0]), rotvec_to_quat([0.0, 0.0, link.theta_offset]))
    return pos, from_xyzw(quat, "wxyz")


def add_dh_chain(
    parent: mujoco.MjsBody,
    links: Sequence[DHLink],
    prefix: str,
    *,
    armature: Sequence[float],
    damping: Sequence[float],
    rgba: Sequence[float] = (0.9, 0.9, 0.9, 1.0),
) -> list[mujoco.MjsBody]:
    """Append ``links`` under ``parent``; joints are named ``{prefix}joint{i}`` (1-based).

    Each link gets a capsule from its origin to the next link's origin, so the collision and
    visual shape follow the published kinematics without meshes. Returns the link bodies.
    """
    bodies = []
    body = parent
    for i, link in enumerate(links):
        pos, quat = dh_frame(link)
        if i > 0 and np.linalg.norm(pos) > 1e-6:
            # capsule in the previous link, ending at this joint
            _add_capsule(body, np.zeros(3), pos, links[i - 1].radius, rgba)
        body = body.add_body(name=f"{prefix}link{i + 1}", pos=pos, quat=quat)
        body.mass = link.mass
        body.ipos = np.asarray(link.com, float)
        body.fullinertia = np.asarray(link.inertia, float)
        body.explicitinertial = True
        body.add_joint(
            name=f"{prefix}joint{i + 1}",
            type=mujoco.mjtJoint.mjJNT_HINGE,
            axis=[0, 0, 1],
            range=list(link.q_range),
            limited=mujoco.mjtLimited.mjLIMITED_TRUE,
            armature=armature[i],
            damping=damping[i],
        )
        bodies.append(body)
    return bodies


def _add_capsule(body, p0, p1, radius, rgba) -> None:
    body.add_geom(
        type=mujoco.mjtGeom.mjGEOM_CAPSULE,
        fromto=np.concatenate([p0, p1]),
        size=[radius, 0, 0],
        rgba=list(rgba),
        contype=ARM_CONTYPE,
        conaffinity=ARM_CONAFFINITY,
        mass=0,
    )
