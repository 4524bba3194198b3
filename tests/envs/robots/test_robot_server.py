"""ArmServer + RemoteArm on loopback, serving a PiperArm that talks to the CAN double."""
import time

import numpy as np
import pytest
import torch

from torchrl_serl.envs.robots.interfaces import RobotConnectionError, RobotError

pytestmark = [pytest.mark.robots, pytest.mark.filterwarnings("ignore:The 'bustype' argument:DeprecationWarning")]


@pytest.fixture
def served(piper_double, can_channel):
    pytest.importorskip("zmq", reason="needs the [robots] extra (pyzmq)")
    from torchrl_serl.envs.robots.piper import PiperArm
    from torchrl_serl.envs.robots.remote import RemoteArm
    from torchrl_serl.envs.robots.server import ArmServer

    arm = PiperArm(can_channel, bustype="virtual")
    arm.connect()
    server = ArmServer(arm, "tcp://127.0.0.1:*", idle_stop_s=0.3).start()
    remote = RemoteArm(server.endpoint, timeout_s=0.5)
    remote.connect()
    yield remote, server, arm
    remote.disconnect()
    server.close()
    arm.disconnect()


def test_remote_state_and_commands_reach_the_arm(served, piper_double):
    remote, _, arm = served
    assert remote.n_joints == 6 and remote.gripper.max_width_m == pytest.approx(0.07)
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
    from torchrl_serl.envs.robots.rotations import euler_zyx_to_quat
    from torchrl_serl.envs.robots.safety import SafetyLimits

    remote, _, _ = served
    safety = SafetyLimits(box_low_m=(0.1, -0.2, 0.1), box_high_m=(0.35, 0.2, 0.4),
                          reference_quat=euler_zyx_to_quat(np.pi, np.deg2rad(43.4), np.pi))
    env = RealArmEnv(remote, safety, home_q=PIPER_HOME_Q, seed=0, max_episode_steps=3, watchdog_timeout_s=None)
    td = env.rollout(3, lambda td: td.set("action", torch.tensor([1.0, 0.0, 0.0, 0.0])))
    assert td.shape == (3,) and bool(td[-1]["next", "truncated"])
    assert float(td[-1]["next", "observation"][0]) > float(td[0]["observation"][0]) + 0.05


def _raw_client(endpoint):
    """A ZMQ client that skips RemoteArm's own checks, as a hostile or buggy one would."""
    import zmq

    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def _ask(sock, request, timeout_s=2.0):
    import json

    sock.send(json.dumps(request).encode() if isinstance(request, dict) else request)
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


def test_server_drops_oversized_messages_and_keeps_serving(served, piper_double):
    remote, server, _ = served
    piper_double.clear_received()
    sock = _raw_client(server.endpoint)
    huge = b'{"method": "set_cartesian_target", "args": [[0.2, 0, 0.3], [0, 0, 0, 1]], "pad": "' + b"x" * 2**20 + b'"}'
    try:
        assert _ask(sock, huge, timeout_s=0.5) is None, "a 1 MiB request was answered"
    finally:
        sock.close()
    time.sleep(0.05)
    assert not piper_double.frames(0x152), "the oversized command reached the arm"
    assert remote.get_state().tcp_pos.shape == (3,)


def test_server_clips_commands_from_any_client(served, piper_double):
    _, server, arm = served
    sock = _raw_client(server.endpoint)  # bypasses RealArmEnv and RemoteArm: the server's limits still hold
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
    monitor = RemoteArm(server.endpoint, timeout_s=0.5)
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


def _strangers(endpoint, rng, stop):
    """Peers that are not clients, until ``stop``: raw TCP sockets sending random bytes (some after a
    ZMTP 3 greeting, some shaped as a ZMTP 1.0 identity), held open, and ZMQ DEALER/REQ sockets sending
    malformed frames."""
    import socket

    import zmq

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
    client = RemoteArm(server.endpoint, timeout_s=5.0)
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
