"""A Piper test double on python-can's in-process ``virtual`` bus, speaking the real CAN frames.

It plays the arm's side of the protocol that ``piper-sdk`` talks (8-byte frames, big-endian):
publishes status 0x2A1, end pose 0x2A2-0x2A4, joints 0x2A5-0x2A7, gripper 0x2A8 and low-speed
driver info 0x261-0x266 (enable flag = bit 6 of byte 5); executes mode 0x151, end-pose
0x152-0x154, joint 0x155-0x157, gripper 0x159, enable/disable 0x471 and quick stop 0x150.
Motion is first-order toward the target (time constant ``tau_s``). Joint moves update the pose
through piper-sdk's own forward kinematics; pose moves (MOVE P) do not update the joints (no IK).
Every received frame is recorded for the tests.
"""
from __future__ import annotations

import math
import struct
import threading
import time

import can
import numpy as np
from piper_sdk.kinematics.piper_fk import C_PiperForwardKinematics


class PiperDouble:
    def __init__(self, channel: str, rate_hz: float = 200.0, tau_s: float = 0.05):
        self.channel = channel
        self.dt = 1.0 / rate_hz
        self.tau_s = tau_s
        self.bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
        self.received: list[tuple[float, int, bytes]] = []
        self.lock = threading.Lock()
        self._fk = C_PiperForwardKinematics()
        # Arm state in SDK units: joints 0.001 deg, pose 0.001 mm / 0.001 deg, gripper 0.001 mm.
        self.joints = np.zeros(6)
        self.pose = self._pose_from_joints(self.joints)
        self.gripper = 0.0
        self.joint_target = self.joints.copy()
        self.pose_target = self.pose.copy()
        self.gripper_target = 0.0
        self._cmd = np.zeros(6)  # frames 0x152..0x157 are latched until the last one of a triple
        self.enabled = [False] * 6
        self.gripper_enabled = False
        self.ctrl_mode = 0x00
        self.move_mode = 0x01
        self.arm_status = 0x00
        self.silent = False  # True: stop publishing feedback (a pulled cable)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"piper-double-{channel}", daemon=True)

    # -- test controls --------------------------------------------------------------------
    def start(self) -> "PiperDouble":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.bus.shutdown()

    def frames(self, can_id: int) -> list[bytes]:
        with self.lock:
            return [data for _, cid, data in self.received if cid == can_id]

    def wait_for(self, predicate, timeout_s: float = 1.0) -> bool:
        """Poll ``predicate()`` until true: frames reach the double on its next tick, not at once."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                return False
            time.sleep(self.dt)
        return True

    def ids(self) -> list[int]:
        with self.lock:
            return [cid for _, cid, _ in self.received]

    def clear_received(self) -> None:
        with self.lock:
            self.received.clear()

    def push_tool(self, dx_m) -> None:
        """An external push: the tool moves by ``dx_m`` ``[3]`` [m] and the arm holds it there."""
        displaced = self.pose.copy()
        displaced[:3] += np.asarray(dx_m, dtype=np.float64) * 1e6
        self.pose_target, self.pose = displaced, displaced.copy()

    # -- model ----------------------------------------------------------------------------
    def _pose_from_joints(self, joints_mdeg: np.ndarray) -> np.ndarray:
        xyz_rpy = self._fk.CalFK(list(np.deg2rad(joints_mdeg / 1000.0)))[-1]  # mm, deg
        return np.array(xyz_rpy) * 1000.0

    def _handle(self, msg: can.Message) -> None:
        data = bytes(msg.data)
        cid = msg.arbitration_id
        with self.lock:
            self.received.append((time.time(), cid, data))
        if cid == 0x471:
            motor, flag = data[0], data[1]
            motors = range(6) if motor in (7, 0xFF) else [motor - 1] if 1 <= motor <= 6 else []
            for m in motors:
                self.enabled[m] = flag == 0x02
        elif cid == 0x151:
            self.ctrl_mode, self.move_mode = data[0], data[1]
        elif cid == 0x150:
            if data[0] == 0x01:
                self.arm_status = 0x01  # EMERGENCY_STOP: freeze where we are
                self.joint_target, self.pose_target = self.joints.copy(), self.pose.copy()
            elif data[0] == 0x02:
                self.arm_status = 0x00
        elif 0x152 <= cid <= 0x157:
            k = (cid - 0x152) % 3
            self._cmd[2 * k: 2 * k + 2] = struct.unpack(">ii", data)
            if cid == 0x154:
                self.pose_target = self._cmd.copy()
            elif cid == 0x157:
                self.joint_target = self._cmd.copy()
        elif cid == 0x159:
            angle, _effort, code, _zero = struct.unpack(">iHBB", data)
            self.gripper_enabled = code in (0x01, 0x03)
            if self.gripper_enabled:
                self.gripper_target = float(angle)

    def _step(self) -> None:
        alpha = 1.0 - math.exp(-self.dt / self.tau_s)
        moving = all(self.enabled) and self.ctrl_mode == 0x01 and self.arm_status == 0x00
        if moving and self.move_mode == 0x01:
            self.joints += alpha * (self.joint_target - self.joints)
            self.pose = self._pose_from_joints(self.joints)
        elif moving and self.move_mode in (0x00, 0x02):
            diff = self.pose_target - self.pose
            # Euler angles wrap at +-180 deg: move along the short way.
            diff[3:] = (diff[3:] + 180e3) % 360e3 - 180e3
            self.pose += alpha * diff
            self.pose[3:] = (self.pose[3:] + 180e3) % 360e3 - 180e3
        if self.gripper_enabled and self.arm_status == 0x00:
            self.gripper += alpha * (self.gripper_target - self.gripper)

    def _publish(self, tick: int) -> None:
        def send(cid, payload):
            self.bus.send(can.Message(arbitration_id=cid, data=payload, is_extended_id=False))

        reached = np.max(np.abs(self.joint_target - self.joints)) < 100 if self.move_mode == 0x01 else True
        send(0x2A1, struct.pack(">BBBBBBH", self.ctrl_mode, self.arm_status, self.move_mode, 0,
                                0 if reached else 1, 0, 0))
        p = np.round(self.pose).astype(np.int64)
        send(0x2A2, struct.pack(">ii", p[0], p[1]))
        send(0x2A3, struct.pack(">ii", p[2], p[3]))
        send(0x2A4, struct.pack(">ii", p[4], p[5]))
        j = np.round(self.joints).astype(np.int64)
        send(0x2A5, struct.pack(">ii", j[0], j[1]))
        send(0x2A6, struct.pack(">ii", j[2], j[3]))
        send(0x2A7, struct.pack(">ii", j[4], j[5]))
        send(0x2A8, struct.pack(">ihBx", int(round(self.gripper)), 500, 0x40 if self.gripper_enabled else 0))
        if tick % 10 == 0:  # the real arm sends driver info at a lower rate
            for m in range(6):
                foc_status = (1 << 6) if self.enabled[m] else 0
                send(0x261 + m, struct.pack(">HhbBH", 240, 35, 30, foc_status, 0))

    def _run(self) -> None:
        tick = 0
        next_t = time.monotonic()
        while not self._stop.is_set():
            while (msg := self.bus.recv(timeout=0.0)) is not None:
                self._handle(msg)
            self._step()
            if not self.silent:
                self._publish(tick)
            tick += 1
            next_t += self.dt
            time.sleep(max(0.0, next_t - time.monotonic()))
