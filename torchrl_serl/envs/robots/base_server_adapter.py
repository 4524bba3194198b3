"""Drive a robot written for the seed port's ``BaseRobotServer`` / ``BaseGripperServer`` API through this package.

The seed port's drivers speak, in SI units with ``[qx, qy, qz, qw]`` quaternions:

- arm: ``connect() -> bool``, ``disconnect()``, ``stop()``, ``get_state() -> dict`` with
  ``joint_positions`` ``[n]`` [rad], ``cartesian_position`` ``[3]`` [m], ``cartesian_orientation``
  ``[4]`` and optionally ``joint_velocities`` ``[n]`` [rad/s];
  ``move_to_joint_positions(positions, velocity=None, acceleration=None, blocking=True) -> bool``;
  ``move_to_cartesian_pose(position, orientation, velocity=None, acceleration=None, blocking=True) -> bool``;
  optionally ``get_joint_limits() -> (low, high)`` [rad];
- gripper: ``connect() -> bool``, ``disconnect()``, ``get_state() -> dict`` with ``position``,
  ``move_to_position(position, speed=None, force=None, blocking=True) -> bool``.

:class:`BaseRobotServerArm` and :class:`BaseGripperServerGripper` wrap such objects as a
:class:`RobotArm` and a :class:`Gripper`, so ``RealArmEnv`` (``SafetyLimits``, watchdog, Ctrl-C
stop) and ``ArmServer`` drive them like the built-in arms. A ``False`` from ``connect()`` raises
``RobotConnectionError``; a refused command, an exception inside the driver, a missing, badly
shaped or non-finite state entry raise ``RobotError`` naming the call.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from .interfaces import ArmState, Gripper, RobotArm, RobotConnectionError, RobotError
from .safety import check_finite_vector, check_joint_limits

logger = logging.getLogger(__name__)


def _call(name: str, call: str, fn: Callable, *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` with the driver's own exceptions turned into ``RobotError`` naming the call."""
    try:
        return fn(*args, **kwargs)
    except RobotError:
        raise
    except Exception as err:
        raise RobotError(f"{name}.{call} raised {type(err).__name__}: {err}") from err


def _state_entry(name: str, state: Any, key: str, size: int) -> np.ndarray:
    """``state[key]`` as float64 ``[size]`` (a scalar counts as ``[1]``); ``RobotError`` naming the key otherwise."""
    where = f"{name}.get_state()[{key!r}]"
    if not isinstance(state, dict):
        raise RobotError(f"{name}.get_state() returned a {type(state).__name__}, not a dict")
    if key not in state:
        raise RobotError(f"{name}.get_state() has no {key!r} entry (it has {sorted(state)})")
    try:
        value = np.atleast_1d(np.asarray(state[key], dtype=np.float64))
    except (TypeError, ValueError):
        raise RobotError(f"{where} is {state[key]!r}, not numbers") from None
    if value.shape != (size,):
        raise RobotError(f"{where} must have shape ({size},), got {value.shape}")
    if not np.all(np.isfinite(value)):
        raise RobotError(f"{where} contains NaN/inf: {value.tolist()}")
    return value


class BaseGripperServerGripper(Gripper):
    """A seed-port ``BaseGripperServer`` as a :class:`Gripper` commanded by opening width [m].

    Widths ``[0, max_width_m]`` map linearly onto the server's positions ``[closed_position,
    open_position]``: the defaults suit a server in metres (a Franka hand: ``max_width_m=0.08``);
    a Robotiq-style server of 0 (open) to 255 (closed) takes ``open_position=0, closed_position=255``.

    Args:
        server: the ``BaseGripperServer``.
        max_width_m: widest opening [m].
        open_position, closed_position: the server's position when fully open / closed
            (``open_position`` defaults to ``max_width_m``).
    """

    def __init__(self, server, max_width_m: float, open_position: float | None = None, closed_position: float = 0.0):
        if not (np.isfinite(max_width_m) and max_width_m > 0):
            raise ValueError(f"max_width_m must be a finite width > 0 m, got {max_width_m!r}")
        self.server, self.name = server, type(server).__name__
        self.max_width_m = float(max_width_m)
        self.open_position = self.max_width_m if open_position is None else float(open_position)
        self.closed_position = float(closed_position)
        if self.open_position == self.closed_position:
            raise ValueError(f"open_position and closed_position are both {self.open_position}")

    def connect(self) -> None:
        if not _call(self.name, "connect()", self.server.connect):
            raise RobotConnectionError(f"{self.name}.connect() returned False: the gripper did not connect")

    def disconnect(self) -> None:
        try:
            self.server.disconnect()
        except Exception as err:  # releasing a dead link must not hide the error that got us here
            logger.warning("%s.disconnect() raised %s: %s", self.name, type(err).__name__, err)

    def move_to_position(self, width_m: float) -> None:
        width_m = self._check_width(width_m)
        position = self.closed_position + (self.open_position - self.closed_position) * width_m / self.max_width_m
        ok = _call(self.name, "move_to_position()", self.server.move_to_position, position, blocking=False)
        if not ok:
            raise RobotError(f"{self.name}.move_to_position({position:g}) returned {ok!r}: the gripper refused it")

    def width(self) -> float:
        state = _call(self.name, "get_state()", self.server.get_state)
        position = float(_state_entry(self.name, state, "position", 1)[0])
        fraction = (position - self.closed_position) / (self.open_position - self.closed_position)
        return float(np.clip(fraction, 0.0, 1.0) * self.max_width_m)


class BaseRobotServerArm(RobotArm):
    """A seed-port ``BaseRobotServer`` as a :class:`RobotArm`.

    ``set_cartesian_target`` is ``move_to_cartesian_pose(..., blocking=False)``: the server's own
    controller tracks the target. Blocking moves run ``blocking=True`` under a deadline: past
    ``timeout_s`` the arm is stopped and ``RobotError`` raised. Joint targets outside the joint
    limits are refused before they are sent. The seed API reports no error flags (``errors`` is
    always empty, ``clear_errors`` does nothing: its ``reset()`` moves the arm, so it is not called)
    and no tool velocity (``tcp_vel``, and ``dq`` without ``joint_velocities``, are finite
    differences of consecutive states).

    Args:
        server: the ``BaseRobotServer``.
        gripper: the arm's gripper, or ``None``; connected and disconnected with the arm.
        joint_limits_rad: ``(low [n], high [n])``; defaults to ``server.get_joint_limits()``.
    """

    def __init__(self, server, gripper: BaseGripperServerGripper | None = None, joint_limits_rad=None):
        self.server, self.name, self.gripper = server, type(server).__name__, gripper
        if joint_limits_rad is None:
            if not hasattr(server, "get_joint_limits"):
                raise ValueError(f"{self.name} has no get_joint_limits(): pass joint_limits_rad=(low, high)")
            joint_limits_rad = server.get_joint_limits()
        low, high = (np.asarray(v, dtype=np.float64).reshape(-1) for v in joint_limits_rad)
        self.n_joints = len(low)
        self.joint_low_rad = check_finite_vector("joint_limits_rad low", low, self.n_joints)
        self.joint_high_rad = check_finite_vector("joint_limits_rad high", high, self.n_joints)
        if np.any(self.joint_low_rad >= self.joint_high_rad):
            raise ValueError(f"joint_limits_rad: low {low.tolist()} must be below high {high.tolist()}")
        self._connected = False
        self._last: tuple[float, np.ndarray, np.ndarray] | None = None  # (time, q, tcp_pos) of the last state

    def connect(self) -> None:
        if not _call(self.name, "connect()", self.server.connect):
            raise RobotConnectionError(f"{self.name}.connect() returned False: the arm did not connect "
                                       "(check its address and power, and that no other program holds it)")
        self._connected = True
        if self.gripper is not None:
            self.gripper.connect()

    def disconnect(self) -> None:
        if not self._connected:
            return
        self.stop()
        self._connected = False
        if self.gripper is not None:
            self.gripper.disconnect()
        try:
            self.server.disconnect()
        except Exception as err:
            logger.warning("%s.disconnect() raised %s: %s", self.name, type(err).__name__, err)

    def _require_connection(self) -> None:
        if not self._connected:
            raise RobotConnectionError(f"{self.name} is not connected; call connect() first")

    def get_state(self) -> ArmState:
        self._require_connection()
        state = _call(self.name, "get_state()", self.server.get_state)
        now = time.monotonic()
        q = _state_entry(self.name, state, "joint_positions", self.n_joints)
        pos = _state_entry(self.name, state, "cartesian_position", 3)
        quat = _state_entry(self.name, state, "cartesian_orientation", 4)
        dq, tcp_vel = np.zeros(self.n_joints), np.zeros(3)
        if self._last is not None and now > self._last[0]:
            dt = now - self._last[0]
            dq, tcp_vel = (q - self._last[1]) / dt, (pos - self._last[2]) / dt
        if isinstance(state, dict) and "joint_velocities" in state:
            dq = _state_entry(self.name, state, "joint_velocities", self.n_joints)
        self._last = (now, q, pos)
        return ArmState(q=q, dq=dq, tcp_pos=pos, tcp_quat=quat, tcp_vel=tcp_vel, timestamp=now)

    def _blocking(self, call: str, fn: Callable, args: tuple, timeout_s: float) -> None:
        result: dict[str, Any] = {}

        def run():
            try:
                result["ok"] = fn(*args, blocking=True)
            except Exception as err:
                result["error"] = err

        worker = threading.Thread(target=run, name=f"{self.name}.{call}", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            self.stop()
            raise RobotError(f"{self.name}.{call} did not finish within {timeout_s} s; arm stopped")
        if "error" in result:
            err = result["error"]
            raise RobotError(f"{self.name}.{call} raised {type(err).__name__}: {err}") from err
        if not result["ok"]:
            raise RobotError(f"{self.name}.{call} returned {result['ok']!r}: the arm refused or failed the move")

    def move_to_joint_positions(self, q, timeout_s: float = 10.0) -> None:
        self._require_connection()
        q = check_finite_vector(f"{self.name} joint target", q, self.n_joints)
        check_joint_limits(f"{self.name} joint target", q, self.joint_low_rad, self.joint_high_rad)
        self._blocking("move_to_joint_positions()", self.server.move_to_joint_positions, (q,), timeout_s)

    def move_to_cartesian_pose(self, pos, quat, timeout_s: float = 10.0) -> None:
        self._require_connection()
        pos = check_finite_vector(f"{self.name} target position", pos, 3)
        quat = check_finite_vector(f"{self.name} target quaternion", quat, 4)
        self._blocking("move_to_cartesian_pose()", self.server.move_to_cartesian_pose, (pos, quat), timeout_s)

    def set_cartesian_target(self, pos, quat) -> None:
        self._require_connection()
        pos = check_finite_vector(f"{self.name} target position", pos, 3)
        quat = check_finite_vector(f"{self.name} target quaternion", quat, 4)
        ok = _call(self.name, "move_to_cartesian_pose()", self.server.move_to_cartesian_pose, pos, quat, blocking=False)
        if not ok:
            raise RobotError(f"{self.name}.move_to_cartesian_pose({pos.tolist()}, blocking=False) returned {ok!r}: "
                             "the arm refused the target")

    def stop(self) -> None:
        if not self._connected:
            return
        try:
            if self.server.stop() is False:
                logger.warning("%s.stop() returned False", self.name)
        except Exception as err:  # stop must not raise on a dead link: the caller is already handling a failure
            logger.warning("%s.stop() raised %s: %s", self.name, type(err).__name__, err)

    def clear_errors(self) -> None:
        """Nothing to clear: the seed API reports no error flags."""
