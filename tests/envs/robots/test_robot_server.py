"""ArmServer + RemoteArm on loopback, serving a PiperArm that talks to the CAN double."""
import json
import re
import time

import numpy as np
import pytest
import torch

from torchrl_serl.envs.robots.interfaces import RobotConnectionError, RobotError

pytestmark = [pytest.mark.robots, pytest.mark.filterwarnings("ignore:The 'bustype' argument:DeprecationWarning")]
SECRET = "test-secret-for-the-robot-server-0123456789"


@pytest.fixture(autouse=True)
def _no_secret_from_the_environment(monkeypatch):
    monkeypatch.delenv("TORCHRL_SERL_SECRET", raising=False)


@pytest.fixture
def served(piper_double, can_channel):
    """A CURVE-authenticated server (secret ``SECRET``) and a client holding the secret."""
    pytest.importorskip("zmq", reason="needs the [robots] extra (pyzmq)")
    from torchrl_serl.envs.robots.piper import PiperArm
    from torchrl_serl.envs.robots.remote import RemoteArm
    from torchrl_serl.envs.robots.server import ArmServer

    arm = PiperArm(can_channel, bustype="virtual")
    arm.connect()
    server = ArmServer(arm, "tcp://127.0.0.1:*", idle_stop_s=0.3, secret=SECRET).start()
    remote = RemoteArm(server.endpoint, timeout_s=0.5, secret=SECRET)
    remote.connect()
    yield remote, server, arm
    remote.disconnect()
    server.close()
    arm.disconnect()


def test_remote_state_and_commands_reach_the_arm(served, piper_double):
    remote, server, arm = served
    server.idle_stop_s = 10.0  # the idle stop must not halt the arm on its way while the test waits
    assert remote.n_joints == 6 and remote.gripper.max_width_m == pytest.approx(0.07)
    np.testing.assert_array_equal(remote.joint_low_rad, arm.joint_low_rad)
    np.testing.assert_array_equal(remote.joint_high_rad, arm.joint_high_rad)
    state = remote.get_state()
    np.testing.assert_allclose(state.tcp_pos, arm.get_state().tcp_pos, atol=1e-6)
    q = np.array([0.0, 0.9, -0.8, 0.0, 0.6, 0.0])
    remote.move_to_joint_positions(q, 5.0)
    np.testing.assert_allclose(remote.get_state().q, q, atol=0.01)
    target = remote.get_state().tcp_pos + np.array([0.01, 0.0, 0.0])
    remote.set_cartesian_target(target, remote.get_state().tcp_quat)
    assert piper_double.wait_for(lambda: np.allclose(piper_double.pose[:3] / 1e6, target, atol=1e-3))
    remote.gripper.move_to_position(0.03)
    assert piper_double.wait_for(lambda: abs(remote.gripper.width() - 0.03) < 1e-3)
    assert remote.ping_s() < 0.05


def test_remote_errors_are_clear(served, piper_double):
    remote, _, _ = served
    time.sleep(0.05)  # let the connect-time frames land
    piper_double.clear_received()
    with pytest.raises(ValueError, match="NaN"):  # refused on the client: never leaves the learner
        remote.set_cartesian_target([np.nan, 0, 0.3], [0, 0, 0, 1])
    with pytest.raises(ValueError, match="joint limits"):  # refused by the server's arm
        remote.move_to_joint_positions([0, -1.0, 0, 0, 0, 0])
    time.sleep(0.05)
    assert piper_double.ids() == []


def test_server_stops_arm_when_client_goes_quiet(served, piper_double):
    remote, server, _ = served
    state = remote.get_state()
    remote.set_cartesian_target(state.tcp_pos, state.tcp_quat)  # a motion command: this client controls the arm
    t0 = time.time()

    def held():
        with piper_double.lock:
            return [cid for t, cid, _ in piper_double.received if t >= t0 and cid in (0x155, 0x156, 0x157)]

    assert piper_double.wait_for(lambda: server.idle_stops == 1 and len(held()) >= 3, timeout_s=3.0)
    time.sleep(0.3)  # more idle periods pass: still one stop
    assert server.idle_stops == 1 and held() == [0x155, 0x156, 0x157]


def test_lost_server_raises_connection_error_within_deadline(served):
    remote, server, _ = served
    server.close()
    t0 = time.monotonic()
    with pytest.raises(RobotConnectionError, match="did not answer 'get_state' within 0.5 s"):
        remote.get_state()
    assert time.monotonic() - t0 < 1.0
    remote.stop()  # best effort, must not raise: the server side stops the arm itself


def test_env_over_remote_arm(served, piper_double):
    from torchrl_serl.envs.robots.arm_env import PIPER_HOME_Q, RealArmEnv
    from torchrl_serl.envs.rotations import euler_xyz_to_quat
    from torchrl_serl.envs.robots.safety import SafetyLimits

    remote, _, _ = served
    safety = SafetyLimits(box_low_m=(0.1, -0.2, 0.1), box_high_m=(0.35, 0.2, 0.4),
                          reference_quat=euler_xyz_to_quat([np.pi, np.deg2rad(43.4), np.pi]))
    env = RealArmEnv(remote, safety, home_q=PIPER_HOME_Q, seed=0, max_episode_steps=3, watchdog_timeout_s=None)
    td = env.rollout(3, lambda td: td.set("action", torch.tensor([1.0, 0.0, 0.0, 0.0])))
    assert td.shape == (3,) and bool(td[-1]["next", "truncated"])
    assert float(td[-1]["next", "observation"][0]) > float(td[0]["observation"][0]) + 0.05


def _raw_client(endpoint, secret=None, curve=None, ctx=None):
    """A ZMQ client that skips RemoteArm's own checks, as a hostile or buggy one would.

    ``secret``: CURVE keys derived from it (an authenticated but buggy client); ``curve``: explicit
    CURVE socket options; neither: a plain (NULL-mechanism) socket. ``ctx``: its own ZMQ context
    (the shared one's I/O thread also carries the test's good client)."""
    import zmq

    from torchrl_serl.security import curve_client_options

    sock = (ctx or zmq.Context.instance()).socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    for option, value in (curve or (curve_client_options(secret.encode()) if secret else {})).items():
        sock.setsockopt(option, value)
    sock.connect(endpoint)
    return sock


def _ask(sock, request, timeout_s=2.0):
    """The server's answer, or ``None`` if there is none within ``timeout_s``. The send has the
    same deadline: once the server refused a client's handshake the REQ socket has no peer, and a
    plain send would block forever."""
    import json

    import zmq

    sock.setsockopt(zmq.SNDTIMEO, int(timeout_s * 1000))
    try:
        sock.send(json.dumps(request).encode() if isinstance(request, dict) else request)
    except zmq.Again:
        return None
    return json.loads(sock.recv()) if sock.poll(int(timeout_s * 1000)) else None


def _pose_commands(double):
    """Tool positions [m] of the end-pose commands (0x152 x, y; 0x153 z) the double received."""
    import struct

    xy = [struct.unpack(">ii", f) for f in double.frames(0x152)]
    z = [struct.unpack(">ii", f)[0] for f in double.frames(0x153)]
    return np.array([[x, y, zz] for (x, y), zz in zip(xy, z)]) / 1e6


def test_server_binds_loopback_by_default():
    import inspect

    from torchrl_serl.envs.robots.server import ArmServer, make_parser

    assert inspect.signature(ArmServer).parameters["bind"].default.startswith("tcp://127.0.0.1:")
    assert make_parser().parse_args(["piper"]).bind.startswith("tcp://127.0.0.1:")


@pytest.mark.parametrize("pad_bytes", [2**20, 200 * 2**20])
def test_server_drops_oversized_messages_and_keeps_serving(served, piper_double, pad_bytes):
    remote, server, _ = served
    piper_double.clear_received()
    import zmq

    # Even from a client holding the secret. Its own context: encrypting 200 MiB keeps an I/O thread busy.
    ctx = zmq.Context()
    sock = _raw_client(server.endpoint, secret=SECRET, ctx=ctx)
    huge = bytearray(b'{"method": "set_cartesian_target", "args": [[0.2, 0, 0.3], [0, 0, 0, 1]], "pad": "')
    huge += b"x" * pad_bytes + b'"}'
    try:
        assert _ask(sock, bytes(huge), timeout_s=1.0) is None, f"a {pad_bytes} B request was answered"
    finally:
        sock.close()
        ctx.term()
    time.sleep(0.05)
    assert not piper_double.frames(0x152), "the oversized command reached the arm"
    assert remote.get_state().tcp_pos.shape == (3,)


def test_server_clips_commands_from_any_client(served, piper_double):
    _, server, arm = served
    # Bypasses RealArmEnv and RemoteArm (but holds the secret): the server's limits still hold.
    sock = _raw_client(server.endpoint, secret=SECRET)
    try:
        start = arm.get_state()
        piper_double.clear_received()
        reply = _ask(sock, {"method": "set_cartesian_target", "args": [[1.0, 0.5, 0.9], start.tcp_quat.tolist()]})
        assert reply["ok"], reply
        assert piper_double.wait_for(lambda: len(piper_double.frames(0x153)) >= 1)
        target = _pose_commands(piper_double)[-1]
        assert np.linalg.norm(target - start.tcp_pos) <= server.safety.max_step_m + 1e-5
        assert np.all(target <= server.safety.box_high_m + 1e-6)
        piper_double.clear_received()
        reply = _ask(sock, {"method": "move_to_cartesian_pose", "args": [[1.0, 0.5, 0.9], start.tcp_quat.tolist(), 5.0]},
                     timeout_s=8.0)
        assert reply["ok"], reply
        np.testing.assert_allclose(arm.get_state().tcp_pos, server.safety.box_high_m, atol=0.003)  # the box corner
        goals = _pose_commands(piper_double)
        assert len(goals) and np.all(goals <= server.safety.box_high_m + 1e-6)
        assert np.all(goals >= server.safety.box_low_m - 1e-6)
    finally:
        sock.close()


def test_only_the_controlling_client_keeps_the_arm_alive(served, piper_double):
    from torchrl_serl.envs.robots.remote import RemoteArm

    remote, server, _ = served
    monitor = RemoteArm(server.endpoint, timeout_s=0.5, secret=SECRET)
    monitor.connect()
    try:
        state = remote.get_state()
        remote.set_cartesian_target(state.tcp_pos, state.tcp_quat)  # the learner takes control
        with pytest.raises(RobotError, match="another client controls the arm"):
            monitor.set_cartesian_target(state.tcp_pos, state.tcp_quat)
        deadline = time.monotonic() + 3.0
        while server.idle_stops == 0 and time.monotonic() < deadline:
            monitor.get_state()  # a monitor polling state must not keep a dead learner's arm moving
            time.sleep(0.05)
        assert server.idle_stops == 1
        monitor.set_cartesian_target(state.tcp_pos, state.tcp_quat)  # control was released with the stop
        with pytest.raises(RobotError, match="another client controls the arm"):
            remote.set_cartesian_target(state.tcp_pos, state.tcp_quat)
    finally:
        monitor.disconnect()


def test_a_client_flooding_requests_does_not_starve_the_idle_stop(served):
    import threading

    import zmq

    from torchrl_serl.security import curve_client_options

    remote, server, _ = served
    # A monitor holding the secret that pipelines get_state requests (DEALER: no wait for replies),
    # so the server always has one waiting.
    ctx = zmq.Context()
    flood = ctx.socket(zmq.DEALER)
    flood.setsockopt(zmq.LINGER, 0)
    for option, value in curve_client_options(SECRET.encode()).items():
        flood.setsockopt(option, value)
    flood.connect(server.endpoint)
    stop = threading.Event()

    def send():
        request = [b"", json.dumps({"method": "get_state"}).encode()]
        while not stop.is_set():
            flood.send_multipart(request, copy=False)
            while flood.poll(0):
                flood.recv_multipart()

    flooder = threading.Thread(target=send)
    try:
        state = remote.get_state()
        flooder.start()
        remote.set_cartesian_target(state.tcp_pos, state.tcp_quat)  # the learner takes control, then dies
        t0 = time.monotonic()
        while server.idle_stops == 0 and time.monotonic() - t0 < 3.0:
            time.sleep(0.01)
        assert server.idle_stops == 1 and server.controller is None
        assert time.monotonic() - t0 < server.idle_stop_s + 0.5
    finally:
        stop.set()
        flooder.join(10)
        flood.close()
        ctx.term()


def _strangers(endpoint, rng, stop):
    """Peers that are not clients, until ``stop``: raw TCP sockets sending random bytes (some after a
    ZMTP 3 greeting, some shaped as a ZMTP 1.0 identity), held open, and ZMQ DEALER/REQ sockets holding
    the secret (buggy, not hostile) sending malformed frames, so the frames reach the server's handler."""
    import socket

    import zmq

    from torchrl_serl.security import curve_client_options

    credentials = curve_client_options(SECRET.encode())

    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    ctx = zmq.Context.instance()
    held = []
    greeting = b"\xff" + bytes(8) + b"\x7f\x03\x00NULL" + bytes(48)
    while not stop.is_set():
        n = int(rng.integers(0, 20))
        raw = socket.create_connection((host, int(port)), timeout=1.0)
        raw.sendall(rng.choice([b"", greeting, bytes([n + 1, 0]) + rng.bytes(n)]) + rng.bytes(int(rng.integers(1, 2048))))
        held.append(raw)
        if len(held) > 20:
            held.pop(0).close()
        for kind in (zmq.DEALER, zmq.REQ):
            stranger = ctx.socket(kind)
            stranger.setsockopt(zmq.LINGER, 0)
            for option, value in credentials.items():
                stranger.setsockopt(option, value)
            stranger.connect(endpoint)
            for frames in ([rng.bytes(40)], [b"", rng.bytes(40)], [b"", b"", b"{}"], [rng.bytes(8), b"", b"[1]"],
                           [b"", b'{"method": "get_state", "args": 7}'], [b"", b'{"method": null}', b"x"]):
                stranger.send_multipart(frames)
                if kind == zmq.REQ:
                    break  # a REQ socket sends once before it needs a reply
            stranger.close()
        stop.wait(0.005)
    for raw in held:
        raw.close()


@pytest.mark.parametrize("repetition", range(20))
def test_stray_peers_do_not_lose_a_clients_reply(served, repetition):
    import threading

    from torchrl_serl.envs.robots.remote import RemoteArm

    _, server, _ = served
    # A lost reply is never answered; a slow one (a busy CI machine) is, within this deadline.
    client = RemoteArm(server.endpoint, timeout_s=5.0, secret=SECRET)
    client.connect()
    stop = threading.Event()
    stranger = threading.Thread(target=_strangers, args=(server.endpoint, np.random.default_rng(repetition), stop))
    stranger.start()
    try:
        for _ in range(10):
            assert client.get_state().tcp_pos.shape == (3,)  # a lost reply raises RobotConnectionError
            assert client.gripper.width() >= 0.0
    finally:
        stop.set()
        stranger.join(5)
        client.disconnect()
    assert server._thread.is_alive()


# Frames that move the arm, change its mode, clear its errors or drive the gripper.
COMMAND_IDS = {0x150, 0x151, 0x152, 0x153, 0x154, 0x155, 0x156, 0x157, 0x159, 0x471}


def _commands_sent(double):
    return [cid for cid in double.ids() if cid in COMMAND_IDS]


def test_clients_without_the_secret_get_nothing_through(served, piper_double):
    import zmq

    from torchrl_serl.envs.robots.remote import RemoteArm
    from torchrl_serl.security import curve_keypair

    remote, server, arm = served
    start = arm.get_state()
    time.sleep(0.05)  # let the connect-time frames land
    piper_double.clear_received()
    server_public, _ = curve_keypair(SECRET.encode(), "server")
    own_public, own_secret = zmq.curve_keypair()
    credentials = {
        "plain socket": {},
        "wrong secret": {"secret": "not-the-secret-but-long-enough"},
        # Knows the server's public key (public keys may leak), not the secret.
        "own key pair": {"curve": {zmq.CURVE_SERVERKEY: server_public, zmq.CURVE_PUBLICKEY: own_public,
                                   zmq.CURVE_SECRETKEY: own_secret}},
    }
    requests = [{"method": "set_cartesian_target", "args": [[1.0, 0.5, 0.9], start.tcp_quat.tolist()]},
                {"method": "move_to_joint_positions", "args": [[2.687, 3.403, 0.0, 1.954, 1.309, 1.745], 2.0]},
                {"method": "clear_errors"}, {"method": "info"}]
    socks = {(name, r["method"]): _raw_client(server.endpoint, **kw)
             for name, kw in credentials.items() for r in requests}
    try:
        for (name, method), sock in socks.items():
            sock.send(json.dumps(next(r for r in requests if r["method"] == method)).encode())
        time.sleep(1.0)
        answered = [key for key, sock in socks.items() if sock.poll(0)]
        assert answered == [], f"answered without the secret: {answered}"
    finally:
        for sock in socks.values():
            sock.close()
    with pytest.raises(RobotConnectionError, match="its secret differs from this client's"):
        RemoteArm(server.endpoint, timeout_s=0.5, secret="not-the-secret-but-long-enough").connect()
    with pytest.raises(RobotConnectionError, match="requires a secret this client lacks"):
        RemoteArm(server.endpoint, timeout_s=0.5).connect()
    assert server.auth.rejected >= 1, "the ZAP handler never saw the stranger's key"
    assert _commands_sent(piper_double) == [] and server.controller is None
    remote.set_cartesian_target(start.tcp_pos + np.array([0.01, 0, 0]), start.tcp_quat)  # the secret works
    assert piper_double.wait_for(lambda: len(piper_double.frames(0x154)) >= 1)


def test_server_without_a_secret_binds_loopback_only_and_warns(piper_double, can_channel):
    from torchrl_serl.envs.robots.piper import PiperArm
    from torchrl_serl.envs.robots.remote import RemoteArm
    from torchrl_serl.envs.robots.server import ArmServer, main

    arm = PiperArm(can_channel, bustype="virtual")
    for bind in ("tcp://0.0.0.0:*", "tcp://*:*", "tcp://172.16.1.1:5555"):
        with pytest.raises(ValueError, match="without a secret"):
            ArmServer(arm, bind)
    with pytest.raises(SystemExit, match="without --secret-file"):  # before the arm is even opened
        main(["piper", "--can-channel", can_channel, "--bind", "tcp://0.0.0.0:5555"])
    assert arm.sdk is None
    arm.connect()
    with pytest.warns(UserWarning, match="no secret: any process on this machine may command the arm"):
        server = ArmServer(arm, "tcp://127.0.0.1:*").start()
    remote = RemoteArm(server.endpoint, timeout_s=0.5)
    try:
        remote.connect()  # a loopback server without a secret serves plain clients
        assert remote.get_state().q.shape == (6,)
        with pytest.raises(RobotConnectionError, match="its secret differs"):  # and no CURVE client
            RemoteArm(server.endpoint, timeout_s=0.5, secret=SECRET).connect()
    finally:
        remote.disconnect()
        server.close()
        arm.disconnect()


def test_secret_from_the_environment_on_both_sides(piper_double, can_channel, monkeypatch):
    from torchrl_serl.envs.robots.piper import PiperArm
    from torchrl_serl.envs.robots.remote import RemoteArm
    from torchrl_serl.envs.robots.server import ArmServer

    monkeypatch.setenv("TORCHRL_SERL_SECRET", SECRET)
    arm = PiperArm(can_channel, bustype="virtual")
    arm.connect()
    server = ArmServer(arm, "tcp://127.0.0.1:*").start()
    remote = RemoteArm(server.endpoint, timeout_s=0.5)
    try:
        assert server.auth is not None
        remote.connect()
        assert remote.get_state().q.shape == (6,)
        sock = _raw_client(server.endpoint)
        try:
            assert _ask(sock, {"method": "info"}, timeout_s=0.5) is None
        finally:
            sock.close()
    finally:
        remote.disconnect()
        server.close()
        arm.disconnect()


@pytest.mark.parametrize("q, match", [
    ([2.687, 3.403, 0.0, 1.954, 1.309, 1.745], r"joint 1 = 2\.6870 rad is outside \[-2\.6370, 2\.6370\]"),  # the corner
    ([-2.687, 0.0, -3.054, -1.745, -1.309, -1.745], r"joint 1 = -2\.6870 rad is outside"),  # the other corner
    ([0.0, 0.02, -1.0, 0.0, 0.9, 0.0], r"joint 2 = 0\.0200 rad is outside \[0\.0500, 3\.3530\]"),  # in the margin
    ([1.5, 1.0, -1.0, 0.0, 0.9, 0.0], r"outside the workspace box: x = 0\.01\d+ m, allowed \[0\.1000, 0\.3500\]"),
    ([0.0, 0.8, -0.8, 0.0, 0.2, 0.0], r"tilted 0\.70\d rad from the reference orientation, allowed 0\.5 rad"),
])
def test_server_refuses_joint_targets_outside_the_limits_or_the_workspace(served, piper_double, q, match):
    remote, server, arm = served
    time.sleep(0.05)
    piper_double.clear_received()
    sock = _raw_client(server.endpoint, secret=SECRET)  # past RemoteArm, holding the secret
    try:
        reply = _ask(sock, {"method": "move_to_joint_positions", "args": [q, 2.0]})
    finally:
        sock.close()
    assert reply is not None and not reply["ok"] and reply["error"] == "ValueError", reply
    assert re.search(match, reply["message"]), reply["message"]
    with pytest.raises(ValueError, match=match):  # the same through RemoteArm
        remote.move_to_joint_positions(q, 2.0)
    time.sleep(0.1)
    assert _commands_sent(piper_double) == [], "a refused joint target reached the bus"
    np.testing.assert_allclose(arm.get_state().q, 0.0, atol=1e-3)  # never moved
    assert server.controller is None, "a refused command claimed control"


def test_clear_errors_only_from_the_controlling_client(served, piper_double):
    from torchrl_serl.envs.robots.remote import RemoteArm

    remote, server, arm = served
    server.idle_stop_s = 10.0  # the controller keeps control throughout, however slow the machine
    stranger = RemoteArm(server.endpoint, timeout_s=0.5, secret=SECRET)  # holds the secret, does not control
    stranger.connect()
    plain = _raw_client(server.endpoint)
    try:
        state = remote.get_state()
        remote.set_cartesian_target(state.tcp_pos, state.tcp_quat)  # the learner takes control
        piper_double.arm_status = 0x07  # collision
        assert piper_double.wait_for(lambda: arm.get_state().has_error)
        piper_double.clear_received()
        with pytest.raises(RobotError, match="'clear_errors' refused: another client controls the arm"):
            stranger.clear_errors()
        assert _ask(plain, {"method": "clear_errors"}, timeout_s=0.5) is None
        time.sleep(0.05)
        assert _commands_sent(piper_double) == [] and piper_double.arm_status == 0x07
        remote.clear_errors()  # the controlling client may
        assert piper_double.frames(0x150)[0][0] == 0x02 and piper_double.arm_status == 0
    finally:
        plain.close()
        stranger.disconnect()
