"""Franka Emika Panda / FR3 on ``franky-control`` (libfranka), no ROS.

The 1 kHz loop stays inside libfranka: a 10 Hz policy only replaces the reference of a
``CartesianImpedanceTrackingMotion``. Stiffness is set per phase (stiff for reset moves,
compliant for the task), as SERL's compliant controller does.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import numpy as np

from .interfaces import ArmState, Gripper, RobotArm, RobotConnectionError, RobotError
from .safety import SafetyLimits, check_finite_vector, check_joint_limits

PANDA_HOME_Q = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
# The joints both the Panda and the FR3 reach (Franka's datasheets: the tighter bound of the two).
FRANKA_JOINT_LOW_RAD = np.array([-2.7437, -1.7628, -2.8973, -3.0421, -2.8065, 0.5445, -2.8973])
FRANKA_JOINT_HIGH_RAD = np.array([2.7437, 1.7628, 2.8973, -0.1518, 2.8065, 3.7525, 2.8973])


def _import_franky():
    try:
        import franky
    except ImportError as err:  # pragma: no cover - depends on the extra being installed
        raise ImportError("FrankaArm needs franky-control: pip install 'torchrl-serl[robots]'") from err
    return franky


# franky Grippers whose last asynchronous command had not ended when released (see FrankaGripper.release).
_UNFINISHED_GRIPPERS: list = []


def _franky_call(call, device: str):
    """``call()`` with franky's exceptions turned into ``RobotConnectionError``/``RobotError`` naming ``device``.

    Every franky call of this module goes through here, so link loss never escapes as franky's own
    ``NetworkException`` or ``RuntimeError("Net Exception")``. ``ValueError``/``TypeError`` (bad
    arguments, raised before anything is sent) pass through unchanged.
    """
    franky = _import_franky()
    try:
        return call()
    except (ValueError, TypeError):
        raise
    except Exception as err:
        if isinstance(err, franky.NetworkException) or "Net Exception" in str(err):
            raise RobotConnectionError(f"lost the {device}: {type(err).__name__}: {err}") from err
        # ControlException (reflexes, preemption), InvalidMotionTypeException, CommandException, ...
        raise RobotError(f"{device} refused or aborted the command: {type(err).__name__}: {err}") from err


@dataclass(frozen=True)
class ImpedanceGains:
    """Cartesian impedance stiffness; damping is chosen critically damped by franky.

    Args:
        translational: stiffness [N/m] of x, y, z.
        rotational: stiffness [Nm/rad] of roll, pitch, yaw.
    """

    translational: float
    rotational: float

    def __post_init__(self):
        for name in ("translational", "rotational"):
            value = getattr(self, name)
            if not np.isfinite(value) or not 0 < value <= 5000:
                raise ValueError(f"impedance {name} stiffness {value} is outside (0, 5000]")


# SERL-style phases: precise and stiff for resets, compliant while the policy acts.
DEFAULT_PHASE_GAINS = {"reset": ImpedanceGains(2000.0, 150.0), "task": ImpedanceGains(800.0, 60.0)}


class FrankaGripper(Gripper):
    """Franka Hand through ``franky.Gripper``. ``close()`` grasps (holds with ``force_n``).

    The Hand runs one command at a time and a new one blocks until the last finishes, so a
    command issued while one is in flight is kept (latest wins) and sent when it completes;
    ``width()`` and every new command flush it.
    """

    def __init__(self, host: str, speed_mps: float = 0.1, force_n: float = 20.0):
        franky = _import_franky()
        self.device = f"Franka gripper at {host!r}"
        self._gripper = _franky_call(lambda: franky.Gripper(host), self.device)
        self.max_width_m = float(_franky_call(lambda: self._gripper.max_width, self.device))
        self.speed_mps = float(speed_mps)
        self.force_n = float(force_n)
        self._future = None
        self._pending = None

    def _submit(self, command) -> None:
        self._pending = command
        self._flush()

    def _flush(self) -> None:
        if self._pending is None:
            return
        if self._future is not None and not _franky_call(lambda: self._future.wait(0), self.device):
            return
        command, self._pending = self._pending, None
        self._future = _franky_call(command, self.device)

    def move_to_position(self, width_m: float) -> None:
        width_m = self._check_width(width_m)
        self._submit(lambda: self._gripper.move_async(width_m, self.speed_mps))

    def close(self) -> None:
        # A grasp with a wide outer epsilon succeeds on any object and keeps squeezing it.
        self._submit(lambda: self._gripper.grasp_async(0.0, self.speed_mps, self.force_n, epsilon_inner=0.005,
                                                       epsilon_outer=self.max_width_m))

    def width(self) -> float:
        self._flush()
        return float(_franky_call(lambda: self._gripper.width, self.device))

    def release(self, timeout_s: float = 2.0) -> None:
        """Drop the queued command and wait (at most ``timeout_s``) for the one in flight to end.

        franky's ``Gripper`` can crash the process when it is destroyed with an asynchronous command
        still running, so one that does not end in time is kept referenced instead of freed. Never
        raises. (``Gripper.stop()`` is not used here: on a dead link it blocks.)
        """
        self._pending = None
        if self._future is not None:
            try:
                done = self._future.wait(timeout_s)
            except Exception:
                done = True  # the command ended with an error: nothing runs any more
            if not done:
                _UNFINISHED_GRIPPERS.append((self._gripper, self._future))
        self._future = None

    def __del__(self):
        # Dropped without FrankaArm.disconnect(): still never free franky's Gripper mid-command.
        with contextlib.suppress(Exception):
            self.release()


class FrankaArm(RobotArm):
    """Franka arm (7 joints) driven through franky.

    Args:
        host: FCI address of the arm (``"172.16.0.2"``), or ``"127.0.0.1"`` for franky-sim.
        realtime: ``False`` only for simulators: skips libfranka's real-time kernel check.
        relative_dynamics_factor: scales velocity/acceleration/jerk of joint and Cartesian moves, ``(0, 1]``.
        phase_gains: impedance per phase name; ``set_phase`` switches between them.
        with_gripper: also connect the Franka Hand.
        feedback_timeout_s: a robot clock frozen this long makes ``get_state`` raise ``RobotConnectionError``.
    """

    n_joints = 7
    joint_low_rad = FRANKA_JOINT_LOW_RAD
    joint_high_rad = FRANKA_JOINT_HIGH_RAD

    def __init__(
        self,
        host: str,
        realtime: bool = True,
        relative_dynamics_factor: float = 0.15,
        phase_gains: dict | None = None,
        with_gripper: bool = True,
        feedback_timeout_s: float = 0.3,
    ):
        if not 0 < relative_dynamics_factor <= 1:
            raise ValueError(f"relative_dynamics_factor {relative_dynamics_factor} is outside (0, 1]")
        self.host = host
        self.realtime = realtime
        self.relative_dynamics_factor = float(relative_dynamics_factor)
        self.phase_gains = dict(DEFAULT_PHASE_GAINS if phase_gains is None else phase_gains)
        self.phase = "task"
        self.with_gripper = with_gripper
        self.robot = None
        self.gripper = None
        self._tracking = None
        self.feedback_timeout_s = float(feedback_timeout_s)
        self._last_robot_time: tuple[float, int] | None = None
        self.device = f"Franka at {host!r}"

    @staticmethod
    def default_safety() -> SafetyLimits:
        """SERL's pick-cube box ``x [0.2, 0.6], y [-0.3, 0.3], z [0.0, 0.5]`` m, tool pointing down."""
        return SafetyLimits()

    def connect(self) -> None:
        franky = _import_franky()
        config = franky.RealtimeConfig.Enforce if self.realtime else franky.RealtimeConfig.Ignore
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
        try:
            self.robot = _franky_call(lambda: franky.Robot(self.host, realtime_config=config), self.device)
            if not self.realtime:
                # libfranka raises the calling thread to SCHED_FIFO 99 even with RealtimeConfig.Ignore
                # (when permitted); without a real-time kernel that thread, and every process or
                # thread it starts later, would starve the machine's other work.
                os.sched_setscheduler(0, policy, param)
            _franky_call(lambda: setattr(self.robot, "relative_dynamics_factor", self.relative_dynamics_factor),
                         self.device)
            if self.with_gripper:
                self.gripper = FrankaGripper(self.host)
        except RobotConnectionError as err:
            raise RobotConnectionError(f"cannot reach the Franka at {self.host!r}: {err.__cause__}") from err
        if _franky_call(lambda: self.robot.has_errors, self.device):
            self.clear_errors()

    def disconnect(self) -> None:
        if self.robot is None:
            return
        try:
            self.stop()
        finally:
            if self.gripper is not None:
                self.gripper.release()
            self.robot = None
            self.gripper = None
            self._last_robot_time = None

    # -- state ----------------------------------------------------------------------------
    def get_state(self) -> ArmState:
        if self.robot is None:
            raise RobotConnectionError("FrankaArm is not connected; call connect() first")
        try:
            rs = _franky_call(lambda: self.robot.state, self.device)
            cart = _franky_call(lambda: self.robot.current_cartesian_state, self.device)
        except RobotError as err:  # any failure to read the state is a lost link here
            raise RobotConnectionError(f"lost the Franka at {self.host!r}: {err}") from err
        moving_error = self._poll_errors()
        self._check_fresh(rs.time.to_msec())
        pose = cart.pose.end_effector_pose
        errs = rs.current_errors
        errors = tuple(n for n in dir(errs) if not n.startswith("_") and getattr(errs, n) is True)
        if moving_error:
            errors += (moving_error,)
        return ArmState(
            q=np.asarray(rs.q, dtype=np.float64), dq=np.asarray(rs.dq, dtype=np.float64),
            tcp_pos=np.asarray(pose.translation, dtype=np.float64),
            tcp_quat=np.asarray(pose.quaternion, dtype=np.float64),
            tcp_vel=np.asarray(cart.velocity.end_effector_twist.linear, dtype=np.float64),
            wrench=np.asarray(rs.O_F_ext_hat_K, dtype=np.float64),
            errors=errors, timestamp=time.monotonic(),
        )

    def _check_fresh(self, robot_time_ms: int) -> None:
        # franky serves the last received state when packets stop; the arm's clock then freezes.
        now = time.monotonic()
        if self._last_robot_time is None or robot_time_ms != self._last_robot_time[1]:
            self._last_robot_time = (now, robot_time_ms)
        elif now - self._last_robot_time[0] > self.feedback_timeout_s:
            raise RobotConnectionError(
                f"Franka at {self.host!r}: no new state for {now - self._last_robot_time[0]:.3f} s "
                f"(limit {self.feedback_timeout_s} s); network link lost"
            )

    def _poll_errors(self) -> str:
        """Name of the exception an asynchronous motion died with, or ``""``; a lost link raises."""
        if self._tracking is None:
            return ""
        try:
            _franky_call(self.robot.poll_motion, self.device)  # re-raises what killed an asynchronous motion
        except RobotConnectionError:
            self._tracking = None
            raise
        except RobotError as err:
            self._tracking = None
            return f"motion aborted: {type(err.__cause__).__name__}: {err.__cause__}"
        if not _franky_call(lambda: self.robot.is_in_control, self.device):
            self._tracking = None
        return ""

    # -- commands -------------------------------------------------------------------------
    def set_phase(self, phase: str) -> None:
        """Switch the impedance to ``phase_gains[phase]``; the running tracking motion follows smoothly."""
        if phase not in self.phase_gains:
            raise ValueError(f"unknown impedance phase {phase!r}; known: {sorted(self.phase_gains)}")
        self.phase = phase
        if self._tracking is not None:
            franky = _import_franky()
            gains = self.phase_gains[phase]
            self._run(lambda: self._tracking.set_gains(franky.CartesianImpedanceGains(gains.translational,
                                                                                       gains.rotational)))

    def set_cartesian_target(self, pos, quat) -> None:
        franky = _import_franky()
        pos = check_finite_vector("Franka target position", pos, 3)
        quat = check_finite_vector("Franka target quaternion", quat, 4)
        reference = franky.CartesianReference(franky.Affine(pos, quat))
        error = self._poll_errors()
        if error:
            raise RobotError(f"Franka impedance tracking stopped: {error}")
        if self._tracking is None:
            gains = self.phase_gains[self.phase]
            motion = franky.CartesianImpedanceTrackingMotion(
                translational_stiffness=gains.translational, rotational_stiffness=gains.rotational
            )
            motion.set_reference(reference)
            self._run(lambda: self.robot.move(motion, asynchronous=True))
            self._tracking = motion
        else:
            self._run(lambda: self._tracking.set_reference(reference))

    def tool_pose_at(self, q) -> tuple[np.ndarray, np.ndarray]:
        """libfranka's model (``Model.pose`` of the end-effector frame, with the arm's current flange-to-EE
        transform): the pose ``get_state`` reports as ``tcp_pos``/``tcp_quat`` once at ``q``."""
        franky = _import_franky()
        q = check_finite_vector("Franka joints", q, 7)
        if self.robot is None:
            raise RobotConnectionError("FrankaArm is not connected; call connect() first")
        state = _franky_call(lambda: self.robot.state, self.device)
        pose = _franky_call(lambda: self.robot.model.pose(franky.Frame.EndEffector, q, state.F_T_EE, state.EE_T_K),
                            self.device)
        return np.asarray(pose.translation, dtype=np.float64), np.asarray(pose.quaternion, dtype=np.float64)

    def move_to_joint_positions(self, q, timeout_s: float = 20.0) -> None:
        franky = _import_franky()
        q = check_finite_vector("Franka joint target", q, 7)
        check_joint_limits("Franka joint target", q, FRANKA_JOINT_LOW_RAD, FRANKA_JOINT_HIGH_RAD)
        self._blocking_move(franky.JointMotion(franky.JointState(q)), timeout_s, f"joints {q.tolist()} rad")

    def move_to_cartesian_pose(self, pos, quat, timeout_s: float = 20.0) -> None:
        franky = _import_franky()
        pos = check_finite_vector("Franka target position", pos, 3)
        quat = check_finite_vector("Franka target quaternion", quat, 4)
        self._blocking_move(franky.CartesianMotion(franky.Affine(pos, quat)), timeout_s, f"pose {pos.tolist()} m")

    def _blocking_move(self, motion, timeout_s: float, what: str) -> None:
        self.stop()
        self._run(lambda: self.robot.move(motion, asynchronous=True))
        if not self._run(lambda: self.robot.join_motion(timeout=timeout_s)):
            self.stop()
            raise RobotError(f"Franka did not reach {what} within {timeout_s} s")

    def _run(self, call):
        try:
            return _franky_call(call, self.device)
        except RobotError:
            self._tracking = None
            raise

    def stop(self) -> None:
        """Stop the running motion; libfranka then holds the current pose."""
        if self.robot is None:
            return
        self._tracking = None
        try:
            self.robot.stop()
            self.robot.join_motion(timeout=2.0)
        except Exception:
            # "Move command preempted" is how libfranka reports a stopped motion; on a dead link
            # there is nothing left to stop (the arm's communication reflex halts it).
            pass

    def clear_errors(self) -> None:
        """libfranka's automatic error recovery (reflexes, limit violations)."""
        if not self._run(self.robot.recover_from_errors):
            raise RobotError(f"Franka at {self.host!r}: automatic error recovery failed")
        self._tracking = None
