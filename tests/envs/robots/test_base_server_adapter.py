"""A driver written for the seed port's BaseRobotServer/BaseGripperServer API, plugged in through the adapter."""

import threading
import time

import numpy as np
import pytest
import torch
from torchrl.envs.utils import check_env_specs

from torchrl_serl.envs.robots import (
    BaseGripperServerGripper,
    BaseRobotServerArm,
    RealArmEnv,
    RobotConnectionError,
    RobotError,
    SafetyLimits,
)

DOWN = np.array([1.0, 0.0, 0.0, 0.0])  # tool pointing down, [qx, qy, qz, qw]


class SeedArmServer:
    """A 6-joint arm speaking exactly the seed port's BaseRobotServer API (dicts, bools, blocking flags).

    Its controller reaches every target at once; ``calls`` records what the adapter sent.
    """

    def __init__(self, robot_ip: str = "10.0.0.1", connects: bool = True, state_keys=None):
        self.connects, self.state_keys = connects, state_keys
        self.q = np.zeros(6)
        self.pos, self.quat = np.array([0.4, 0.0, 0.3]), DOWN.copy()
        self.calls: list[tuple] = []
        self.accept = True
        self.move_s = 0.0
        self.stopped = threading.Event()

    def connect(self) -> bool:
        self.calls.append(("connect",))
        return self.connects

    def disconnect(self) -> bool:
        self.calls.append(("disconnect",))
        return True

    def get_state(self) -> dict:
        state = {
            "joint_positions": self.q.copy(),
            "joint_velocities": np.zeros(6),
            "joint_torques": np.zeros(6),
            "cartesian_position": self.pos.copy(),
            "cartesian_orientation": self.quat.copy(),
        }
        return state if self.state_keys is None else {k: state[k] for k in self.state_keys}

    def move_to_joint_positions(self, positions, velocity=None, acceleration=None, blocking=True) -> bool:
        self.calls.append(("joints", np.array(positions), blocking))
        if self.move_s and self.stopped.wait(self.move_s):
            return False
        if self.accept:
            self.q = np.array(positions, dtype=float)
            self.pos = np.array([0.4, 0.0, 0.3]) + 0.01 * self.q[:3]
        return self.accept

    def move_to_cartesian_pose(self, position, orientation, velocity=None, acceleration=None, blocking=True) -> bool:
        self.calls.append(("pose", np.array(position), np.array(orientation), blocking))
        if self.accept:
            self.pos, self.quat = np.array(position, dtype=float), np.array(orientation, dtype=float)
        return self.accept

    def stop(self) -> bool:
        self.calls.append(("stop",))
        self.stopped.set()
        return True

    def get_joint_limits(self):
        return np.full(6, -2.5), np.full(6, 2.5)

    def targets(self, blocking: bool = False) -> list[np.ndarray]:
        return [c[1] for c in self.calls if c[0] == "pose" and c[3] == blocking]


class SeedGripperServer:
    """A Robotiq-style BaseGripperServer: position 0 (open) to 255 (closed)."""

    def __init__(self, connects: bool = True):
        self.connects, self.position, self.commands = connects, 0.0, []

    def connect(self) -> bool:
        return self.connects

    def disconnect(self) -> bool:
        return True

    def move_to_position(self, position, speed=None, force=None, blocking=True) -> bool:
        self.commands.append((position, blocking))
        self.position = position
        return True

    def get_state(self) -> dict:
        return {"position": self.position, "is_moving": False, "force": 0.0, "is_grasping": self.position > 200}


def _arm(server=None, gripper_server=None):
    server = server or SeedArmServer()
    gripper = BaseGripperServerGripper(gripper_server or SeedGripperServer(), max_width_m=0.085,
                                       open_position=0.0, closed_position=255.0)
    return BaseRobotServerArm(server, gripper=gripper), server


def test_state_and_commands_map_onto_robot_arm():
    arm, server = _arm()
    arm.connect()
    state = arm.get_state()
    np.testing.assert_array_equal(state.tcp_pos, [0.4, 0.0, 0.3])
    np.testing.assert_array_equal(state.tcp_quat, DOWN)
    assert state.q.shape == state.dq.shape == (6,) and state.errors == () and not state.has_error
    assert arm.n_joints == 6 and arm.joint_high_rad.tolist() == [2.5] * 6
    arm.move_to_joint_positions([0.1, 0.2, 0.3, 0.0, 0.0, 0.0])
    assert server.calls[-1][0] == "joints" and server.calls[-1][2] is True  # blocking
    np.testing.assert_allclose(arm.get_state().tcp_pos, [0.401, 0.002, 0.303])
    arm.set_cartesian_target([0.45, 0.0, 0.3], DOWN)
    assert server.calls[-1][0] == "pose" and server.calls[-1][3] is False  # non-blocking: the server tracks it
    time.sleep(0.01)
    assert arm.get_state().tcp_vel[0] > 0  # finite-differenced: the seed API reports no tool velocity
    arm.gripper.close()
    assert arm.gripper.width() == 0.0 and arm.gripper.server.commands[-1] == (255.0, False)
    arm.gripper.move_to_position(0.085 / 2)
    assert arm.gripper.server.commands[-1][0] == pytest.approx(127.5)
    assert arm.gripper.width() == pytest.approx(0.085 / 2)
    arm.disconnect()
    arm.disconnect()  # safe twice
    assert [c[0] for c in server.calls[-2:]] == ["stop", "disconnect"]
    with pytest.raises(RobotConnectionError, match="not connected"):
        arm.get_state()


def test_connect_returning_false_is_a_clear_error():
    arm, _ = _arm(SeedArmServer(connects=False))
    with pytest.raises(RobotConnectionError, match=r"SeedArmServer\.connect\(\) returned False"):
        arm.connect()
    arm, _ = _arm(gripper_server=SeedGripperServer(connects=False))
    with pytest.raises(RobotConnectionError, match=r"SeedGripperServer\.connect\(\) returned False"):
        arm.connect()


@pytest.mark.parametrize("missing", ["joint_positions", "cartesian_position", "cartesian_orientation"])
def test_missing_state_key_is_a_clear_error(missing):
    keys = [k for k in ("joint_positions", "cartesian_position", "cartesian_orientation") if k != missing]
    arm, _ = _arm(SeedArmServer(state_keys=keys))
    arm.connect()
    with pytest.raises(RobotError, match=rf"SeedArmServer\.get_state\(\) has no '{missing}' entry"):
        arm.get_state()


def test_bad_state_values_and_gripper_state_are_clear_errors():
    server = SeedArmServer()
    arm, _ = _arm(server)
    arm.connect()
    server.pos = np.array([np.nan, 0.0, 0.3])
    with pytest.raises(RobotError, match=r"\['cartesian_position'\] contains NaN"):
        arm.get_state()
    server.quat = np.eye(3)  # the seed allowed a rotation matrix; this package needs a quaternion
    server.pos = np.array([0.4, 0.0, 0.3])
    with pytest.raises(RobotError, match=r"\['cartesian_orientation'\] must have shape \(4,\)"):
        arm.get_state()
    arm.gripper.server.get_state = lambda: {"is_moving": False}
    with pytest.raises(RobotError, match=r"SeedGripperServer\.get_state\(\) has no 'position' entry"):
        arm.gripper.width()


def test_refused_failed_and_overdue_moves_raise_and_stop():
    server = SeedArmServer()
    arm, _ = _arm(server)
    arm.connect()
    server.accept = False
    with pytest.raises(RobotError, match="returned False: the arm refused the target"):
        arm.set_cartesian_target([0.4, 0.0, 0.3], DOWN)
    with pytest.raises(RobotError, match="refused or failed the move"):
        arm.move_to_cartesian_pose([0.4, 0.0, 0.3], DOWN)
    server.accept = True
    server.get_state = lambda: 1 / 0
    with pytest.raises(RobotError, match=r"get_state\(\) raised ZeroDivisionError"):
        arm.get_state()
    server.move_s = 5.0  # a move that would take 5 s, against a 0.2 s deadline
    t0 = time.monotonic()
    with pytest.raises(RobotError, match=r"did not finish within 0.2 s; arm stopped"):
        arm.move_to_joint_positions(np.zeros(6), timeout_s=0.2)
    assert time.monotonic() - t0 < 2.0 and server.calls[-1] == ("stop",)


def test_joint_targets_outside_the_limits_never_reach_the_server():
    server = SeedArmServer()
    arm, _ = _arm(server)
    arm.connect()
    with pytest.raises(ValueError, match="joint 2 = 3.0000 rad is outside"):
        arm.move_to_joint_positions([0.0, 3.0, 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        arm.move_to_joint_positions([np.nan, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert [c[0] for c in server.calls] == ["connect"]
    limited = BaseRobotServerArm(server, joint_limits_rad=([-1.0] * 6, [1.0] * 6))  # limits given, not asked
    assert limited.joint_high_rad.tolist() == [1.0] * 6


def test_stop_never_raises_on_a_dead_driver():
    server = SeedArmServer()
    arm, _ = _arm(server)
    arm.connect()

    def dead():
        raise ConnectionError("link down")

    server.stop = dead
    arm.stop()
    arm.disconnect()


def _env(server, **kwargs):
    arm, _ = _arm(server)
    arm.connect()
    limits = SafetyLimits(box_low_m=(0.3, -0.2, 0.1), box_high_m=(0.5, 0.2, 0.4), reference_quat=DOWN,
                          max_step_m=0.02)
    return RealArmEnv(arm, limits, home_q=np.zeros(6), control_hz=200.0, action_scale_m=0.05,
                      reset_noise_m=0.0, seed=0, **kwargs)


def test_real_arm_env_keeps_its_safety_limits_over_the_adapter():
    server = SeedArmServer()
    env = _env(server)
    try:
        check_env_specs(env)
        td = env.reset()
        sent = len(server.calls)
        for bad in (torch.tensor([float("nan"), 0, 0, 0]), torch.tensor([1, 0, 0, 0]), torch.zeros(3)):
            with pytest.raises(ValueError, match="action"):
                env.step(td.set("action", bad))
        assert len(server.calls) == sent, "a refused action must not reach the driver"
        before = len(server.targets())
        for _ in range(25):  # push up and out of the box at full speed
            td = env.step(td.set("action", torch.tensor([1.0, 1.0, 1.0, 1.0])))["next"]
        targets = np.array(server.targets()[before:])
        assert len(targets) == 25
        steps = np.linalg.norm(np.diff(np.vstack([[0.4, 0.0, 0.3], targets]), axis=0), axis=1)
        assert steps.max() <= 0.02 + 1e-9  # one max_step_m per step, not action_scale_m
        assert np.all(targets <= np.array([0.5, 0.2, 0.4]) + 1e-9)  # never outside the box
        np.testing.assert_allclose(targets[-1], [0.5, 0.2, 0.4])
        assert td["observation"][6] == 1.0 and env.arm.gripper.server.position == 255.0  # closed
    finally:
        env.close()
    assert server.calls[-1] == ("disconnect",)


def test_robot_server_serves_the_adapted_arm_with_its_limits(monkeypatch):
    pytest.importorskip("zmq", reason="needs the [robots] extra (pyzmq)")
    from torchrl_serl.envs.robots.remote import RemoteArm
    from torchrl_serl.envs.robots.server import ArmServer

    monkeypatch.delenv("TORCHRL_SERL_SECRET", raising=False)
    secret = "test-secret-for-the-seed-adapter-0123456789"
    arm, server = _arm()
    arm.connect()
    limits = SafetyLimits(box_low_m=(0.3, -0.2, 0.1), box_high_m=(0.5, 0.2, 0.4), reference_quat=DOWN, max_step_m=0.02)
    served = ArmServer(arm, "tcp://127.0.0.1:*", idle_stop_s=None, safety=limits, secret=secret).start()
    remote = RemoteArm(served.endpoint, timeout_s=2.0, secret=secret)
    try:
        remote.connect()
        assert remote.n_joints == 6 and remote.gripper.max_width_m == pytest.approx(0.085)
        remote.set_cartesian_target([0.9, 0.0, 0.3], DOWN)  # far outside the box: one step toward it
        np.testing.assert_allclose(server.targets()[-1], [0.42, 0.0, 0.3])
        with pytest.raises(ValueError, match="joint 1 = 2.4800 rad is outside"):
            remote.move_to_joint_positions([2.48, 0.0, 0.0, 0.0, 0.0, 0.0])  # inside the limits, not the margin
        assert not [c for c in server.calls if c[0] == "joints"]
        np.testing.assert_allclose(remote.get_state().tcp_pos, [0.42, 0.0, 0.3])
    finally:
        remote.disconnect()
        served.close()
        arm.disconnect()
