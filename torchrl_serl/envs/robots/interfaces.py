"""Abstract arm and gripper interfaces every real robot driver implements.

Units are SI everywhere: positions in m, angles in rad, velocities in m/s and rad/s,
forces in N and torques in Nm. Orientations are quaternions ``[x, y, z, w]`` (scalar last).
Vendor units (Piper's 0.001 mm / 0.001 deg, ...) never leave the driver. See
``docs/robots.md`` for how to add an arm.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np


class RobotError(RuntimeError):
    """The arm reported an error or refused a command; the arm has been asked to stop."""


class RobotConnectionError(RobotError):
    """The link to the arm (CAN bus, network, robot server) was lost or timed out."""


@dataclass
class ArmState:
    """One snapshot of an arm.

    Attributes:
        q: joint positions ``[n_joints]`` [rad].
        dq: joint velocities ``[n_joints]`` [rad/s].
        tcp_pos: tool-centre-point position ``[3]`` [m] in the base frame.
        tcp_quat: tool orientation ``[4]``, ``[x, y, z, w]``.
        tcp_vel: tool linear velocity ``[3]`` [m/s] (finite-differenced when the arm has none).
        wrench: external force/torque at the tool ``[6]`` [N, Nm], ``None`` where the arm has no sensing.
        errors: names of the active error flags; empty when the arm is fine.
        timestamp: host time [s] the state was read (``time.monotonic()``).
    """

    q: np.ndarray
    dq: np.ndarray
    tcp_pos: np.ndarray
    tcp_quat: np.ndarray
    tcp_vel: np.ndarray
    wrench: np.ndarray | None = None
    errors: tuple[str, ...] = field(default_factory=tuple)
    timestamp: float = 0.0

    @property
    def has_error(self) -> bool:
        return len(self.errors) > 0


class Gripper(abc.ABC):
    """A parallel gripper commanded by opening width [m]."""

    max_width_m: float

    @abc.abstractmethod
    def move_to_position(self, width_m: float) -> None:
        """Start moving the fingers to ``width_m`` in ``[0, max_width_m]``; does not block."""

    @abc.abstractmethod
    def width(self) -> float:
        """Current opening [m]."""

    def open(self) -> None:
        self.move_to_position(self.max_width_m)

    def close(self) -> None:
        self.move_to_position(0.0)

    def _check_width(self, width_m: float) -> float:
        width_m = float(width_m)
        if not np.isfinite(width_m) or not 0.0 <= width_m <= self.max_width_m + 1e-9:
            raise ValueError(f"gripper width {width_m} m is outside [0, {self.max_width_m}] m")
        return min(width_m, self.max_width_m)


class RobotArm(abc.ABC):
    """An arm that holds a Cartesian target with its own low-level controller.

    ``set_cartesian_target`` is the call a 10 Hz policy loop uses: it returns at once and the
    arm's controller (libfranka's 1 kHz impedance loop, the Piper firmware) tracks the target.
    """

    n_joints: int
    # Joint limits [rad], ``[n_joints]`` each; the robot server refuses joint targets outside them.
    joint_low_rad: np.ndarray
    joint_high_rad: np.ndarray
    gripper: Gripper | None = None

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the link and make the arm ready to take commands (enable motors, set mode)."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Stop motion and release the link. Safe to call twice."""

    @abc.abstractmethod
    def get_state(self) -> ArmState:
        """Latest state; raises ``RobotConnectionError`` when the feedback is stale."""

    @abc.abstractmethod
    def move_to_joint_positions(self, q, timeout_s: float = 10.0) -> None:
        """Blocking joint-space move to ``q`` ``[n_joints]`` [rad]."""

    @abc.abstractmethod
    def move_to_cartesian_pose(self, pos, quat, timeout_s: float = 10.0) -> None:
        """Blocking move of the tool to ``pos`` ``[3]`` [m], ``quat`` ``[4]`` xyzw."""

    def tool_pose_at(self, q) -> tuple[np.ndarray, np.ndarray] | None:
        """Forward kinematics: the tool pose ``(pos [3] m, quat [4] xyzw)`` at joints ``q`` ``[n_joints]`` [rad],
        in the frame of ``ArmState.tcp_pos``; ``None`` where the driver has no forward kinematics."""
        return None

    @abc.abstractmethod
    def set_cartesian_target(self, pos, quat) -> None:
        """Non-blocking: replace the tracked tool target; the arm keeps tracking it."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop all motion now and hold position. Must not raise when the link is already gone."""

    @abc.abstractmethod
    def clear_errors(self) -> None:
        """Acknowledge and reset recoverable errors so the arm takes commands again."""

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.disconnect()
        return False
