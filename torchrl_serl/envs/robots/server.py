"""Robot server for the arm's real-time PC: wraps a ``RobotArm`` behind ZMQ REQ/REP.

Why ZMQ REQ/REP rather than HTTP: one small JSON message each way per call, no per-request
connection set-up, Nagle is off by default (stdlib HTTP costs ~44 ms a request on loopback
unless TCP_NODELAY is set), and ``zmq.Poller`` gives the client a hard deadline on every call.
The 1 kHz loop stays in the vendor library on this PC; the learner (``RemoteArm``) can live on
another machine and restart without the arm being dropped. If no request arrives for
``idle_stop_s`` the server stops the arm, so a crashed learner leaves it still.

Run on the robot PC::

    python -m torchrl_serl.envs.robots.server franka --host 172.16.0.2 --bind tcp://0.0.0.0:5555
"""
from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np

from .interfaces import ArmState, RobotArm

PROTOCOL_VERSION = 1


def state_to_dict(state: ArmState) -> dict:
    return {
        "q": state.q.tolist(), "dq": state.dq.tolist(), "tcp_pos": state.tcp_pos.tolist(),
        "tcp_quat": state.tcp_quat.tolist(), "tcp_vel": state.tcp_vel.tolist(),
        "wrench": None if state.wrench is None else state.wrench.tolist(),
        "errors": list(state.errors), "timestamp": state.timestamp,
    }


def state_from_dict(d: dict) -> ArmState:
    arr = lambda k: np.asarray(d[k], dtype=np.float64)  # noqa: E731
    return ArmState(q=arr("q"), dq=arr("dq"), tcp_pos=arr("tcp_pos"), tcp_quat=arr("tcp_quat"),
                    tcp_vel=arr("tcp_vel"), wrench=None if d["wrench"] is None else arr("wrench"),
                    errors=tuple(d["errors"]), timestamp=float(d["timestamp"]))


class ArmServer:
    """Serves one connected ``RobotArm`` on a ZMQ REP socket.

    Args:
        arm: the connected arm (``FrankaArm``, ``PiperArm``, ...).
        bind: ZMQ endpoint, e.g. ``"tcp://0.0.0.0:5555"``; ``"tcp://127.0.0.1:*"`` picks a free port.
        idle_stop_s: stop the arm when no request arrives for this long; ``None`` disables.
    """

    def __init__(self, arm: RobotArm, bind: str = "tcp://0.0.0.0:5555", idle_stop_s: float | None = 1.0):
        import zmq

        self.arm = arm
        self.idle_stop_s = idle_stop_s
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(bind)
        self.endpoint = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.idle_stops = 0
        gripper = arm.gripper
        self._handlers = {
            "info": lambda: {"protocol": PROTOCOL_VERSION, "arm": type(arm).__name__, "n_joints": arm.n_joints,
                             "gripper_max_width_m": None if gripper is None else gripper.max_width_m},
            "get_state": lambda: state_to_dict(arm.get_state()),
            "set_cartesian_target": arm.set_cartesian_target,
            "move_to_joint_positions": arm.move_to_joint_positions,
            "move_to_cartesian_pose": arm.move_to_cartesian_pose,
            "stop": arm.stop,
            "clear_errors": arm.clear_errors,
            "set_phase": getattr(arm, "set_phase", lambda phase: None),
        }
        if gripper is not None:
            self._handlers.update({
                "gripper_move": gripper.move_to_position, "gripper_open": gripper.open,
                "gripper_close": gripper.close, "gripper_width": gripper.width,
            })

    def _handle(self, raw: bytes) -> dict:
        try:
            request = json.loads(raw)
            handler = self._handlers.get(request.get("method"))
            if handler is None:
                raise ValueError(f"unknown method {request.get('method')!r}; known: {sorted(self._handlers)}")
            result = handler(*request.get("args", []), **request.get("kwargs", {}))
            return {"ok": True, "result": result}
        except Exception as err:  # every failure goes back to the client, the server keeps serving
            return {"ok": False, "error": type(err).__name__, "message": str(err)}

    def serve_forever(self) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        last_request = time.monotonic()
        idle_stopped = False
        while not self._stop.is_set():
            if poller.poll(timeout=20):
                reply = self._handle(self._sock.recv())
                self._sock.send(json.dumps(reply).encode())
                last_request, idle_stopped = time.monotonic(), False
            elif (self.idle_stop_s is not None and not idle_stopped
                  and time.monotonic() - last_request > self.idle_stop_s):
                idle_stopped = True
                self.idle_stops += 1
                try:
                    self.arm.stop()
                except Exception:
                    pass  # the next request will surface the arm's state
        self._sock.close()

    def start(self) -> "ArmServer":
        """Serve from a daemon thread (tests, or a server embedded in another process)."""
        self._thread = threading.Thread(target=self.serve_forever, name="arm-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Serve a real arm to a remote learner over ZMQ.")
    parser.add_argument("arm", choices=["franka", "piper"])
    parser.add_argument("--host", default="172.16.0.2", help="Franka FCI address")
    parser.add_argument("--no-realtime", action="store_true", help="Franka: skip the RT kernel check (simulators)")
    parser.add_argument("--can-channel", default="can0", help="Piper CAN interface")
    parser.add_argument("--bind", default="tcp://0.0.0.0:5555")
    parser.add_argument("--idle-stop-s", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.arm == "franka":
        from .franka import FrankaArm

        arm = FrankaArm(args.host, realtime=not args.no_realtime)
    else:
        from .piper import PiperArm

        arm = PiperArm(args.can_channel)
    arm.connect()
    server = ArmServer(arm, args.bind, args.idle_stop_s)
    print(f"serving {type(arm).__name__} on {server.endpoint}", flush=True)
    try:
        server.serve_forever()
    finally:
        arm.disconnect()


if __name__ == "__main__":
    main()

