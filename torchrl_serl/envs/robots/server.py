"""Robot server for the arm's real-time PC: wraps a ``RobotArm`` behind ZMQ, with its own safety.

Why ZMQ rather than HTTP: one small JSON message each way per call, no per-request connection
set-up, Nagle is off by default (stdlib HTTP costs ~44 ms a request on loopback unless
TCP_NODELAY is set), and ``zmq.Poller`` gives the client a hard deadline on every call. The
1 kHz loop stays in the vendor library on this PC; the learner (``RemoteArm``) can live on
another machine and restart without the arm being dropped.

The server trusts no client. With a shared secret (``--secret-file`` or ``$TORCHRL_SERL_SECRET``,
see ``torchrl_serl.security``) the link is ZMQ CURVE: only a client holding the secret completes
the handshake, and nothing from any other peer reaches the handler. Without one it binds loopback
only (and warns: any local user may command the arm); a non-loopback bind without a secret is
refused. It drops messages over ``max_message_bytes``, clips every Cartesian target through its
own ``SafetyLimits`` (step limits measured from the pose it reads just before sending), refuses
joint targets outside the joint limits less a margin or whose forward kinematics leaves the
workspace, and lets one client at a time move the arm or clear its errors. That controlling
client is the one whose control command was accepted last; only its requests keep the arm alive,
so a monitor polling ``get_state`` cannot hide a dead learner: when the controller sends nothing
for ``idle_stop_s`` the server stops the arm and releases control. Any client (holding the secret,
where there is one) may ``stop`` the arm.

Run on the robot PC (``--bind`` another interface only on the robot's private network)::

    # once; copy the file to the learner's machine
    (umask 077; python -m torchrl_serl.security > ~/.torchrl_serl_secret)
    python -m torchrl_serl.envs.robots.server franka --host 172.16.0.2 --bind tcp://172.16.1.1:5555 \
        --secret-file ~/.torchrl_serl_secret
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import threading
import time

import numpy as np

from ...security import CurveServerAuth, is_loopback_endpoint, load_secret, require_secret_off_loopback
from .interfaces import ArmState, RobotArm, RobotError
from .safety import SafetyLimits

# 2: CURVE authentication, joint limits in ``info``.
PROTOCOL_VERSION = 2


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


# Requests that move the arm (or change how it moves): only the controlling client may send them.
CONTROL_METHODS = frozenset({
    "set_cartesian_target", "move_to_joint_positions", "move_to_cartesian_pose", "clear_errors", "set_phase",
    "gripper_move", "gripper_open", "gripper_close",
})
# A request is a method name and a handful of numbers; anything much larger is not ours.
MAX_MESSAGE_BYTES = 64 * 1024


class ArmServer:
    """Serves one connected ``RobotArm`` on a ZMQ ROUTER socket (``RemoteArm`` clients use REQ).

    Args:
        arm: the connected arm (``FrankaArm``, ``PiperArm``, ...).
        bind: ZMQ endpoint; loopback by default. ``"tcp://127.0.0.1:*"`` picks a free port.
        idle_stop_s: stop the arm and release control when the controlling client sends nothing for
            this long; ``None`` disables the stop (control then passes to any client that commands).
        safety: limits applied to every command from any client; defaults to
            ``arm.default_safety()``. ``set_cartesian_target`` is clipped to the box and tilt cone
            and to one step from the pose read just before sending; blocking ``move_to_cartesian_pose``
            goals to the box and tilt cone. ``move_to_joint_positions`` goals are refused when a joint is
            not ``safety.joint_margin_rad`` inside ``arm.joint_low_rad``/``joint_high_rad``, or when the
            tool pose there (``arm.tool_pose_at``, where the driver has forward kinematics) is outside the
            box or the tilt cone.
        max_message_bytes: larger messages are dropped by ZMQ (the sender is disconnected).
        secret: the shared secret (``torchrl_serl.security.load_secret``: this argument, else
            ``$TORCHRL_SERL_SECRET``). With one, only CURVE clients keyed by it are heard. Without one
            the server warns, and refuses to bind anything but loopback, ``ipc`` or ``inproc``.

    Raises:
        ValueError: a non-loopback ``bind`` without a secret, or a secret that is too short.
    """

    def __init__(self, arm: RobotArm, bind: str = "tcp://127.0.0.1:5555", idle_stop_s: float | None = 1.0,
                 *, safety: SafetyLimits | None = None, max_message_bytes: int = MAX_MESSAGE_BYTES,
                 secret: str | bytes | None = None):
        import zmq

        secret = load_secret(secret)
        require_secret_off_loopback(bind, secret, link="robot server", refused="serve the arm on", risk="move it",
                                    local_risk="command the arm", secret_option="--secret-file",
                                    fallback="bind tcp://127.0.0.1")

        if safety is None:
            default_safety = getattr(arm, "default_safety", None)
            if default_safety is None:
                raise TypeError(f"{type(arm).__name__} has no default_safety(); pass safety=SafetyLimits(...)")
            safety = default_safety()
        self.arm = arm
        self.safety = safety
        self.idle_stop_s = idle_stop_s
        self.max_message_bytes = int(max_message_bytes)
        # Its own context: libzmq runs one authenticator (ZAP handler) per context.
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self.auth = None if secret is None else CurveServerAuth(self._ctx, self._sock, secret)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        # A client that rebuilds its socket after a missed deadline keeps its identity (and control).
        self._sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self._sock.bind(bind)
        self.endpoint = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.idle_stops = 0
        self.controller: bytes | None = None
        self._last_control = time.monotonic()
        gripper = arm.gripper
        self._handlers = {
            "info": lambda: {"protocol": PROTOCOL_VERSION, "arm": type(arm).__name__, "n_joints": arm.n_joints,
                             "joint_low_rad": list(map(float, arm.joint_low_rad)),
                             "joint_high_rad": list(map(float, arm.joint_high_rad)),
                             "gripper_max_width_m": None if gripper is None else gripper.max_width_m},
            "get_state": lambda: state_to_dict(arm.get_state()),
            "set_cartesian_target": self._set_cartesian_target,
            "move_to_joint_positions": self._move_to_joint_positions,
            "move_to_cartesian_pose": self._move_to_cartesian_pose,
            "stop": arm.stop,
            "clear_errors": arm.clear_errors,
            "set_phase": getattr(arm, "set_phase", lambda phase: None),
        }
        if gripper is not None:
            self._handlers.update({
                "gripper_move": gripper.move_to_position, "gripper_open": gripper.open,
                "gripper_close": gripper.close, "gripper_width": gripper.width,
            })

    def _set_cartesian_target(self, pos, quat) -> None:
        state = self.arm.get_state()
        self.arm.set_cartesian_target(*self.safety.clip(pos, quat, state.tcp_pos, state.tcp_quat))

    def _move_to_joint_positions(self, q, *args, **kwargs) -> None:
        q = self.safety.check_joint_target(q, self.arm.joint_low_rad, self.arm.joint_high_rad, self.arm.tool_pose_at)
        self.arm.move_to_joint_positions(q, *args, **kwargs)

    def _move_to_cartesian_pose(self, pos, quat, *args, **kwargs) -> None:
        self.arm.move_to_cartesian_pose(*self.safety.clip_to_workspace(pos, quat), *args, **kwargs)

    def _controller_alive(self, now: float) -> bool:
        return (self.controller is not None and self.idle_stop_s is not None
                and now - self._last_control <= self.idle_stop_s)

    def _handle(self, client: bytes, raw: bytes) -> dict:
        try:
            request = json.loads(raw)
            method = request.get("method")
            handler = self._handlers.get(method)
            if handler is None:
                raise ValueError(f"unknown method {method!r}; known: {sorted(self._handlers)}")
            now = time.monotonic()
            if method in CONTROL_METHODS and client != self.controller and self._controller_alive(now):
                raise RobotError(
                    f"{method!r} refused: another client controls the arm (it keeps control until it sends "
                    f"nothing for {self.idle_stop_s} s, or stops the arm)"
                )
            if client == self.controller:
                self._last_control = now
            result = handler(*request.get("args", []), **request.get("kwargs", {}))
            if method == "stop":
                self.controller = None  # a stopped arm is anyone's to command again
            elif method in CONTROL_METHODS:  # accepted: a refused command claims nothing
                self.controller = client
            return {"ok": True, "result": result}
        except Exception as err:  # every failure goes back to the client, the server keeps serving
            return {"ok": False, "error": type(err).__name__, "message": str(err)}

    def serve_forever(self) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if poller.poll(timeout=20):
                frames = self._sock.recv_multipart()
                # REQ clients send [identity, b"", request]; anything else is not a client of ours.
                if len(frames) != 3 or frames[1] != b"":
                    continue
                client, _, raw = frames
                reply = self._handle(client, raw)
                if client == self.controller:  # a blocking move may have taken seconds: alive until now
                    self._last_control = time.monotonic()
                self._sock.send_multipart([client, b"", json.dumps(reply).encode()])
            # Checked after every message too: other clients polling fast must not starve the idle stop.
            if (self.idle_stop_s is not None and self.controller is not None
                    and time.monotonic() - self._last_control > self.idle_stop_s):
                self.controller = None
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
            if self._thread.is_alive():
                return  # still inside a blocking move: it closes the socket when it ends
        else:
            self._sock.close()
        if self.auth is not None:
            self.auth.close()
        self._ctx.term()


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Serve a real arm to a remote learner over ZMQ.")
    parser.add_argument("arm", choices=["franka", "piper"])
    parser.add_argument("--host", default="172.16.0.2", help="Franka FCI address")
    parser.add_argument("--no-realtime", action="store_true", help="Franka: skip the RT kernel check (simulators)")
    parser.add_argument("--can-channel", default="can0", help="Piper CAN interface")
    parser.add_argument("--bind", default="tcp://127.0.0.1:5555",
                        help="ZMQ endpoint; loopback by default, another interface only on the robot's private network")
    parser.add_argument("--secret-file", help="file holding the shared secret (else $TORCHRL_SERL_SECRET); without "
                        "either the server binds loopback only")
    parser.add_argument("--idle-stop-s", type=float, default=1.0)
    parser.add_argument("--box-low-m", type=float, nargs=3, help="workspace box low corner [m] (default: the arm's)")
    parser.add_argument("--box-high-m", type=float, nargs=3, help="workspace box high corner [m] (default: the arm's)")
    parser.add_argument("--max-step-m", type=float, help="largest target step per command [m] (default: the arm's)")
    return parser


def main(argv=None) -> None:
    args = make_parser().parse_args(argv)
    secret = load_secret(secret_file=args.secret_file)
    if secret is None and not is_loopback_endpoint(args.bind):  # before touching the arm
        raise SystemExit(f"refusing to bind {args.bind!r} without --secret-file or $TORCHRL_SERL_SECRET")
    if args.arm == "franka":
        from .franka import FrankaArm

        arm = FrankaArm(args.host, realtime=not args.no_realtime)
    else:
        from .piper import PiperArm

        arm = PiperArm(args.can_channel)
    safety = arm.default_safety()
    overrides = {"box_low_m": args.box_low_m, "box_high_m": args.box_high_m, "max_step_m": args.max_step_m}
    safety = dataclasses.replace(safety, **{k: v for k, v in overrides.items() if v is not None})
    arm.connect()
    server = ArmServer(arm, args.bind, args.idle_stop_s, safety=safety, secret=secret)
    print(f"serving {type(arm).__name__} on {server.endpoint} "
          f"({'CURVE: only clients holding the secret' if secret else 'no secret: any local process'})", flush=True)
    try:
        server.serve_forever()
    finally:
        arm.disconnect()


if __name__ == "__main__":
    main()

