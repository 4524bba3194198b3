"""AgileX Piper on ``piper-sdk`` (CAN), no ROS.

SDK units (0.001 mm, 0.001 deg, gripper 0.001 mm) are converted here and nowhere else.
The Piper reports its tool orientation as ZYX Euler angles ``RX, RY, RZ``; this driver turns
them into ``[x, y, z, w]`` quaternions.
"""
from __future__ import annotations

import time

import numpy as np

from .interfaces import ArmState, Gripper, RobotArm, RobotConnectionError, RobotError
from ..rotations import euler_xyz_to_quat, normalize_quat, quat_to_euler_xyz
from .safety import SafetyLimits, check_finite_vector, check_joint_limits

MM_PER_M = 1000.0
SDK_LINEAR_PER_M = 1e6  # SDK linear unit is 0.001 mm
SDK_ANGLE_PER_RAD = 180e3 / np.pi  # SDK angular unit is 0.001 deg

# 0x151 control modes / move modes (piper-sdk MotionCtrl_2)
CTRL_MODE_CAN = 0x01
MOVE_P = 0x00
MOVE_J = 0x01
# 0x150 quick stop values (piper-sdk EmergencyStop)
ESTOP = 0x01
ESTOP_RESUME = 0x02
# 0x159 gripper codes
GRIPPER_ENABLE = 0x01
GRIPPER_ENABLE_CLEAR_ERROR = 0x03

PIPER_JOINT_LOW_RAD = np.array([-2.687, 0.0, -3.054, -1.745, -1.309, -1.745])
PIPER_JOINT_HIGH_RAD = np.array([2.687, 3.403, 0.0, 1.954, 1.309, 1.745])
PIPER_GRIPPER_MAX_WIDTH_M = 0.07


def _import_sdk():
    try:
        from piper_sdk import C_PiperInterface_V2
    except ImportError as err:  # pragma: no cover - depends on the extra being installed
        raise ImportError(
            "PiperArm needs piper-sdk and python-can: pip install 'torchrl-serl[robots]'"
        ) from err
    return C_PiperInterface_V2


class PiperGripper(Gripper):
    """The Piper's parallel gripper (0x159 command, 0x2A8 feedback)."""

    max_width_m = PIPER_GRIPPER_MAX_WIDTH_M

    def __init__(self, arm: "PiperArm", effort_nm: float = 1.0):
        if not 0.0 <= effort_nm <= 5.0:
            raise ValueError(f"gripper effort_nm {effort_nm} is outside [0, 5] N·m")
        self._arm = arm
        self._effort_sdk = int(round(effort_nm * 1000))

    def move_to_position(self, width_m: float) -> None:
        width_m = self._check_width(width_m)
        self._arm.sdk.GripperCtrl(int(round(width_m * SDK_LINEAR_PER_M)), self._effort_sdk, GRIPPER_ENABLE, 0)

    def width(self) -> float:
        return self._arm.sdk.GetArmGripperMsgs().gripper_state.grippers_angle / SDK_LINEAR_PER_M


class PiperArm(RobotArm):
    """AgileX Piper (6 joints + gripper) through ``piper_sdk.C_PiperInterface_V2``.

    Args:
        can_channel: CAN interface name (``"can0"``) or a python-can ``virtual`` channel.
        bustype: python-can bus type: ``"socketcan"`` on the robot PC, ``"virtual"`` in tests.
        speed_percent: firmware motion speed (0x151 ``move_spd_rate_ctrl``) in ``[1, 100]``.
        feedback_timeout_s: feedback older than this makes ``get_state`` raise ``RobotConnectionError``
            (default 0.5 s: five 10 Hz periods; the arm itself streams at ~200 Hz).
        joint_tolerance_rad, position_tolerance_m: arrival tolerances of the blocking moves.
    """

    n_joints = 6
    joint_low_rad = PIPER_JOINT_LOW_RAD
    joint_high_rad = PIPER_JOINT_HIGH_RAD

    def __init__(
        self,
        can_channel: str = "can0",
        bustype: str = "socketcan",
        speed_percent: int = 50,
        feedback_timeout_s: float = 0.5,
        joint_tolerance_rad: float = 0.01,
        position_tolerance_m: float = 0.002,
        gripper_effort_nm: float = 1.0,
    ):
        if not 1 <= int(speed_percent) <= 100:
            raise ValueError(f"speed_percent {speed_percent} is outside [1, 100]")
        self.can_channel = can_channel
        self.bustype = bustype
        self.speed_percent = int(speed_percent)
        self.feedback_timeout_s = float(feedback_timeout_s)
        self.joint_tolerance_rad = float(joint_tolerance_rad)
        self.position_tolerance_m = float(position_tolerance_m)
        self.sdk = None
        self.gripper = PiperGripper(self, gripper_effort_nm)
        self._last_pose: tuple[float, np.ndarray, np.ndarray] | None = None
        self._fk = None

    @staticmethod
    def default_safety() -> SafetyLimits:
        """The box ``x [0.1, 0.35], y [-0.2, 0.2], z [0.1, 0.4]`` m around the home pose (tool at
        ~(0.19, 0, 0.36) m), tilting around the home orientation (piper-sdk FK of ``PIPER_HOME_Q``:
        RX=180, RY=43.4, RZ=180 deg)."""
        return SafetyLimits(box_low_m=(0.1, -0.2, 0.1), box_high_m=(0.35, 0.2, 0.4),
                            reference_quat=euler_xyz_to_quat([np.pi, np.deg2rad(43.4), np.pi]))

    # -- link -----------------------------------------------------------------------------
    def connect(self, timeout_s: float = 2.0) -> None:
        sdk_cls = _import_sdk()
        # can_auto_init=False: the SDK would otherwise open a socketcan bus in the constructor.
        self.sdk = sdk_cls(can_name=self.can_channel, judge_flag=False, can_auto_init=False)
        self.sdk.CreateCanBus(self.can_channel, bustype=self.bustype, judge_flag=False)
        self.sdk.ConnectPort()
        self._wait_for_feedback(timeout_s)
        if self._status_errors():
            self.clear_errors(timeout_s)
        else:
            self.enable(timeout_s)

    def enable(self, timeout_s: float = 2.0) -> None:
        """Enable all motors (0x471) until every driver reports enabled, then enter CAN control."""
        deadline = time.monotonic() + timeout_s
        while not all(self.sdk.GetArmEnableStatus()):
            if time.monotonic() > deadline:
                raise RobotError(
                    f"Piper on {self.can_channel!r} did not enable within {timeout_s} s "
                    f"(driver enable flags {self.sdk.GetArmEnableStatus()})"
                )
            self.sdk.EnableArm(7)
            time.sleep(0.02)
        self._set_mode(MOVE_J)
        self.sdk.GripperCtrl(0, 0, GRIPPER_ENABLE, 0)

    def disable(self) -> None:
        """Disable all motors (0x471). The arm goes limp: support it first."""
        self.sdk.DisableArm(7)

    def disconnect(self) -> None:
        if self.sdk is None:
            return
        try:
            self.stop()
        finally:
            self.sdk.DisconnectPort()
            self.sdk = None
            self._last_pose = None

    # -- state ----------------------------------------------------------------------------
    def _wait_for_feedback(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.sdk.GetArmStatus().time_stamp == 0 or self.sdk.GetArmJointMsgs().time_stamp == 0:
            if time.monotonic() > deadline:
                raise RobotConnectionError(
                    f"no Piper feedback (0x2A1/0x2A5) on CAN channel {self.can_channel!r} within {timeout_s} s"
                )
            time.sleep(0.01)

    def _status_errors(self) -> tuple[str, ...]:
        status = self.sdk.GetArmStatus().arm_status
        errors = []
        if int(status.arm_status) != 0:
            errors.append(f"arm_status={status.arm_status}")
        err = status.err_status
        for j in range(1, 7):
            if getattr(err, f"joint_{j}_angle_limit"):
                errors.append(f"joint_{j}_angle_limit")
            if getattr(err, f"communication_status_joint_{j}"):
                errors.append(f"communication_status_joint_{j}")
        return tuple(errors)

    def get_state(self) -> ArmState:
        if self.sdk is None:
            raise RobotConnectionError("PiperArm is not connected; call connect() first")
        status = self.sdk.GetArmStatus()
        age = time.time() - status.time_stamp
        if age > self.feedback_timeout_s:
            raise RobotConnectionError(
                f"Piper feedback on {self.can_channel!r} is {age:.3f} s old (limit {self.feedback_timeout_s} s): "
                "CAN link lost or arm powered off"
            )
        js = self.sdk.GetArmJointMsgs().joint_state
        q = np.array([getattr(js, f"joint_{j}") for j in range(1, 7)], dtype=np.float64) / SDK_ANGLE_PER_RAD
        pose_msg = self.sdk.GetArmEndPoseMsgs()
        ep = pose_msg.end_pose
        pos = np.array([ep.X_axis, ep.Y_axis, ep.Z_axis], dtype=np.float64) / SDK_LINEAR_PER_M
        euler = np.array([ep.RX_axis, ep.RY_axis, ep.RZ_axis], dtype=np.float64) / SDK_ANGLE_PER_RAD
        stamp = pose_msg.time_stamp
        # The Piper reports no Cartesian or joint velocity in its standard feedback:
        # finite-difference consecutive feedback frames (their bus timestamps, not host time).
        tcp_vel, dq = np.zeros(3), np.zeros(6)
        if self._last_pose is not None and stamp > self._last_pose[0]:
            dt = stamp - self._last_pose[0]
            tcp_vel = (pos - self._last_pose[1]) / dt
            dq = (q - self._last_pose[2]) / dt
        if self._last_pose is None or stamp > self._last_pose[0]:
            self._last_pose = (stamp, pos, q)
        return ArmState(
            q=q, dq=dq, tcp_pos=pos, tcp_quat=euler_xyz_to_quat(euler), tcp_vel=tcp_vel,
            wrench=None, errors=self._status_errors(), timestamp=time.monotonic(),
        )

    def tool_pose_at(self, q) -> tuple[np.ndarray, np.ndarray]:
        """piper-sdk's forward kinematics (``C_PiperForwardKinematics``, the 2 deg joint-2/3 offset of
        current firmware): the flange pose the arm reports in its end-pose feedback (no tool frame)."""
        q = check_finite_vector("Piper joints", q, 6)
        if self._fk is None:
            from piper_sdk.kinematics.piper_fk import C_PiperForwardKinematics

            self._fk = C_PiperForwardKinematics(0x01)
        xyz_mm, euler_deg = np.split(np.asarray(self._fk.CalFK(q.tolist())[-1], dtype=np.float64), 2)
        return xyz_mm / MM_PER_M, euler_xyz_to_quat(np.deg2rad(euler_deg))

    # -- commands -------------------------------------------------------------------------
    def _set_mode(self, move_mode: int) -> None:
        self.sdk.MotionCtrl_2(CTRL_MODE_CAN, move_mode, self.speed_percent, 0x00)

    def _send_joints(self, q: np.ndarray) -> None:
        q = np.clip(q, PIPER_JOINT_LOW_RAD, PIPER_JOINT_HIGH_RAD)
        self._set_mode(MOVE_J)
        self.sdk.JointCtrl(*(int(round(v)) for v in q * SDK_ANGLE_PER_RAD))

    def set_cartesian_target(self, pos, quat) -> None:
        pos = check_finite_vector("Piper target position", pos, 3)
        quat = check_finite_vector("Piper target quaternion", quat, 4)
        euler = quat_to_euler_xyz(normalize_quat(quat))
        self._set_mode(MOVE_P)
        self.sdk.EndPoseCtrl(
            *(int(round(v)) for v in pos * SDK_LINEAR_PER_M),
            *(int(round(v)) for v in euler * SDK_ANGLE_PER_RAD),
        )

    def move_to_joint_positions(self, q, timeout_s: float = 10.0) -> None:
        q = check_finite_vector("Piper joint target", q, 6)
        check_joint_limits("Piper joint target", q, PIPER_JOINT_LOW_RAD, PIPER_JOINT_HIGH_RAD)
        self._wait_until(lambda s: np.max(np.abs(s.q - q)) < self.joint_tolerance_rad,
                         lambda: self._send_joints(q), timeout_s, f"joints {q.tolist()} rad")

    def move_to_cartesian_pose(self, pos, quat, timeout_s: float = 10.0) -> None:
        pos = check_finite_vector("Piper target position", pos, 3)
        self._wait_until(lambda s: np.linalg.norm(s.tcp_pos - pos) < self.position_tolerance_m,
                         lambda: self.set_cartesian_target(pos, quat), timeout_s, f"tool position {pos.tolist()} m")

    def _wait_until(self, arrived, send, timeout_s: float, what: str) -> None:
        # Re-send at 20 Hz: the firmware only tracks while it keeps hearing CAN commands.
        deadline = time.monotonic() + timeout_s
        while True:
            send()
            time.sleep(0.05)
            state = self.get_state()
            if state.has_error:
                self.stop()
                raise RobotError(f"Piper reported {state.errors} while moving to {what}")
            if arrived(state):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RobotError(f"Piper did not reach {what} within {timeout_s} s (at q={state.q.tolist()})")

    def stop(self) -> None:
        """Hold the measured joint positions; quick-stop (0x150) when feedback is gone."""
        if self.sdk is None:
            return
        try:
            self._send_joints(self.get_state().q)
        except RobotConnectionError:
            self.emergency_stop()

    def emergency_stop(self) -> None:
        """Firmware quick stop (0x150 = 0x01); ``clear_errors`` resumes."""
        self.sdk.EmergencyStop(ESTOP)

    def clear_errors(self, timeout_s: float = 2.0) -> None:
        """Resume after a quick stop (0x150 = 0x02), clear gripper errors, re-enable, CAN mode.

        The SDK sends the same frame for ``ResetPiper``: on some firmware the arm goes limp for a
        moment, so support it (or let it rest on its stand) before calling this.
        """
        self.sdk.EmergencyStop(ESTOP_RESUME)
        self.sdk.GripperCtrl(0, 0, GRIPPER_ENABLE_CLEAR_ERROR, 0)
        self.enable(timeout_s)
        deadline = time.monotonic() + timeout_s
        while self._status_errors():
            if time.monotonic() > deadline:
                raise RobotError(f"Piper errors {self._status_errors()} persist after clear_errors()")
            time.sleep(0.02)
