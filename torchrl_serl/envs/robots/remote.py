"""``RemoteArm``: a ``RobotArm`` whose every call goes to an ``ArmServer`` with a deadline."""
from __future__ import annotations

import json
import time
import uuid

import numpy as np

from ...security import curve_client_options, load_secret
from .interfaces import ArmState, Gripper, RobotArm, RobotConnectionError, RobotError
from .safety import check_finite_vector
from .server import PROTOCOL_VERSION, state_from_dict

_REMOTE_ERRORS = {"RobotConnectionError": RobotConnectionError, "RobotError": RobotError,
                  "ValueError": ValueError}


class RemoteGripper(Gripper):
    def __init__(self, arm: "RemoteArm", max_width_m: float):
        self._arm, self.max_width_m = arm, float(max_width_m)

    def move_to_position(self, width_m: float) -> None:
        self._arm._call("gripper_move", self._check_width(width_m))

    def open(self) -> None:
        self._arm._call("gripper_open")

    def close(self) -> None:
        self._arm._call("gripper_close")

    def width(self) -> float:
        return float(self._arm._call("gripper_width"))


class RemoteArm(RobotArm):
    """Client of an ``ArmServer`` (ZMQ REQ).

    Args:
        address: server endpoint, e.g. ``"tcp://robot-pc:5555"``.
        timeout_s: deadline of each quick call (state, targets, stop) [s].
        move_timeout_s: deadline of the blocking moves, on top of their own timeout.
        secret: the server's shared secret (``torchrl_serl.security.load_secret``: this argument, else
            ``$TORCHRL_SERL_SECRET``); with it the link is CURVE-authenticated and encrypted. Without it
            only a server that has no secret answers.

    A call that misses its deadline raises ``RobotConnectionError`` and the socket is rebuilt
    (a REQ socket cannot send again before it got its reply) under the same client identity, so
    the server still sees the client that controls the arm. The server stops the arm by itself
    when that client goes quiet.
    """

    def __init__(self, address: str, timeout_s: float = 0.5, move_timeout_s: float = 30.0,
                 secret: str | bytes | None = None):
        import zmq

        self._zmq = zmq
        self.address, self.timeout_s, self.move_timeout_s = address, float(timeout_s), float(move_timeout_s)
        secret = load_secret(secret)
        self._curve = {} if secret is None else curve_client_options(secret)
        self._ctx = zmq.Context.instance()
        self._sock = None
        # One identity for this arm's life: the server keeps control with it across socket rebuilds.
        self._client_id = f"remote-arm-{uuid.uuid4().hex}".encode()
        self.n_joints = 0
        self.gripper = None

    def _open_socket(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
        self._sock = self._ctx.socket(self._zmq.REQ)
        self._sock.setsockopt(self._zmq.LINGER, 0)
        self._sock.setsockopt(self._zmq.ROUTING_ID, self._client_id)
        for option, value in self._curve.items():
            self._sock.setsockopt(option, value)
        self._sock.connect(self.address)

    def _call(self, method: str, *args, deadline_s: float | None = None):
        if self._sock is None:
            raise RobotConnectionError(f"RemoteArm({self.address!r}) is not connected; call connect() first")
        deadline_s = self.timeout_s if deadline_s is None else deadline_s
        self._sock.send(json.dumps({"method": method, "args": list(args)}).encode())
        if not self._sock.poll(timeout=int(deadline_s * 1000)):
            self._open_socket()
            why = "its secret differs from this client's" if self._curve else "it requires a secret this client lacks"
            raise RobotConnectionError(
                f"robot server {self.address!r} did not answer {method!r} within {deadline_s} s "
                f"(it is down or unreachable, or {why})"
            )
        reply = json.loads(self._sock.recv())
        if not reply["ok"]:
            raise _REMOTE_ERRORS.get(reply["error"], RobotError)(f"robot server: {reply['error']}: {reply['message']}")
        return reply["result"]

    @staticmethod
    def _list(name: str, value, size: int) -> list:
        # Validate here too: a NaN must not even leave this machine.
        return check_finite_vector(name, value, size).tolist()

    def connect(self) -> None:
        self._open_socket()
        info = self._call("info")
        if info["protocol"] != PROTOCOL_VERSION:
            raise RobotError(f"robot server speaks protocol {info['protocol']}, this client {PROTOCOL_VERSION}")
        self.n_joints = int(info["n_joints"])
        self.joint_low_rad = np.asarray(info["joint_low_rad"], dtype=np.float64)
        self.joint_high_rad = np.asarray(info["joint_high_rad"], dtype=np.float64)
        if info["gripper_max_width_m"] is not None:
            self.gripper = RemoteGripper(self, info["gripper_max_width_m"])

    def disconnect(self) -> None:
        """Stop the arm and drop the link; the server keeps the arm connected for the next client."""
        if self._sock is None:
            return
        try:
            self.stop()
        finally:
            self._sock.close(linger=0)
            self._sock = None

    def get_state(self) -> ArmState:
        return state_from_dict(self._call("get_state"))

    def set_cartesian_target(self, pos, quat) -> None:
        self._call("set_cartesian_target", self._list("target position", pos, 3), self._list("target quaternion", quat, 4))

    def move_to_joint_positions(self, q, timeout_s: float = 20.0) -> None:
        self._call("move_to_joint_positions", self._list("joint target", q, self.n_joints), timeout_s,
                   deadline_s=timeout_s + self.move_timeout_s)

    def move_to_cartesian_pose(self, pos, quat, timeout_s: float = 20.0) -> None:
        self._call("move_to_cartesian_pose", self._list("target position", pos, 3),
                   self._list("target quaternion", quat, 4), timeout_s, deadline_s=timeout_s + self.move_timeout_s)

    def set_phase(self, phase: str) -> None:
        self._call("set_phase", phase)

    def stop(self) -> None:
        """Ask the server to stop; if it cannot be reached its idle watchdog stops the arm."""
        if self._sock is None:
            return
        try:
            self._call("stop", deadline_s=self.timeout_s)
        except RobotConnectionError:
            pass

    def clear_errors(self) -> None:
        self._call("clear_errors", deadline_s=self.move_timeout_s)

    def ping_s(self) -> float:
        """Round-trip time [s] of one ``info`` call."""
        t0 = time.perf_counter()
        self._call("info")
        return time.perf_counter() - t0


__all__ = ["RemoteArm", "RemoteGripper"]
