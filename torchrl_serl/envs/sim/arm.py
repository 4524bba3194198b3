"""What a pick-cube task needs from a simulated arm: build it, reset it, move its TCP, grip."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import mujoco
import numpy as np


@dataclass(frozen=True)
class TaskLayout:
    """Geometry of the pick-cube task for one arm (m, world frame, robot base at the origin)."""

    cartesian_low: tuple[float, float, float]
    cartesian_high: tuple[float, float, float]
    block_xy_low: tuple[float, float]
    block_xy_high: tuple[float, float]
    front_camera_pos: tuple[float, float, float]
    front_camera_target: tuple[float, float, float]


class SimArm(abc.ABC):
    """A simulated arm with a parallel gripper. ``add_to`` builds it into a spec; ``bind`` caches
    ids of the compiled model; the rest runs every control step."""

    tcp_site: str
    layout: TaskLayout

    @abc.abstractmethod
    def add_to(self, world: mujoco.MjsBody, spec: mujoco.MjSpec) -> None: ...

    @abc.abstractmethod
    def bind(self, model: mujoco.MjModel) -> None: ...

    @abc.abstractmethod
    def reset(self, data: mujoco.MjData) -> None:
        """Home joints, zero velocities, gripper open, controller state cleared."""

    @abc.abstractmethod
    def set_gripper(self, data: mujoco.MjData, closure: float) -> None:
        """Command the gripper: ``closure`` 0 = fully open, 1 = fully closed."""

    @abc.abstractmethod
    def advance(self, data: mujoco.MjData, tcp_target: np.ndarray, n_substeps: int) -> None:
        """Drive the TCP toward ``tcp_target [3]`` (m, pointing down) for ``n_substeps`` physics steps."""
