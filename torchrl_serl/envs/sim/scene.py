"""The pick-cube arena: floor (the table top, z = 0), a 4 cm cube on a free joint, lights and a
``front`` camera. The robot is added by a callback (built-in model) or attached from Menagerie."""

from __future__ import annotations

from typing import Callable

import mujoco
import numpy as np

BLOCK_HALF_SIZE_M = 0.02


def build_scene(
    add_robot: Callable[[mujoco.MjsBody, mujoco.MjSpec], None],
    *,
    physics_dt: float,
    front_camera_pos: tuple[float, float, float],
    front_camera_target: tuple[float, float, float],
) -> mujoco.MjSpec:
    """Return an uncompiled spec with the arena and the robot mounted at the origin."""
    spec = mujoco.MjSpec()
    spec.modelname = "pick_cube"
    spec.compiler.degree = False  # all angles in this package are radians
    spec.option.timestep = physics_dt
    # implicitfast keeps the stiff finger/position actuators stable at dt = 2 ms.
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10  # less slip in sustained grasps
    spec.visual.global_.offwidth = 640
    spec.visual.global_.offheight = 480
    world = spec.worldbody
    world.add_light(pos=[0.4, 0, 1.5], dir=[0, 0, -1], diffuse=[0.8, 0.8, 0.8])
    world.add_light(pos=[1.2, 0.8, 1.2], dir=[-1, -0.6, -1], diffuse=[0.3, 0.3, 0.3], castshadow=False)
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0, 0, 0.05],
                   rgba=[0.45, 0.5, 0.55, 1], contype=1, conaffinity=1)
    block = world.add_body(name="block", pos=[0.4, 0, BLOCK_HALF_SIZE_M])
    block.add_freejoint(name="block")
    block.add_geom(name="block", type=mujoco.mjtGeom.mjGEOM_BOX, size=[BLOCK_HALF_SIZE_M] * 3,
                   rgba=[0.85, 0.15, 0.15, 1], mass=0.05, friction=[1.0, 0.01, 0.001], condim=4,
                   contype=1, conaffinity=1)
    pos = np.asarray(front_camera_pos, float)
    fwd = np.asarray(front_camera_target, float) - pos
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    # camera frame: x right, y up, looking along -z
    xmat = np.stack([right, up, -fwd], axis=1)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, xmat.flatten())
    world.add_camera(name="front", pos=pos, quat=quat, fovy=55)
    add_robot(world, spec)
    return spec
