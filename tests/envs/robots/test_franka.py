"""FrankaArm / FrankaEnv end to end against franky-sim (the real libfranka protocol on 127.x)."""
import os
import threading
import time

import numpy as np
import pytest
import torch

from torchrl_serl.envs.robots.franka import PANDA_HOME_Q, FrankaArm, ImpedanceGains
from torchrl_serl.envs.robots.interfaces import RobotConnectionError, RobotError

pytestmark = pytest.mark.robots


def _eventually(predicate, timeout_s=4.0):
    """Poll ``predicate()`` until true or ``timeout_s`` passes: wait on state, not on a fixed sleep."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="module")
def arm(franky_sim):
    arm = FrankaArm(franky_sim, realtime=False, relative_dynamics_factor=0.6)
    arm.connect()
    yield arm
    arm.disconnect()


def test_connect_without_realtime_leaves_the_thread_scheduling_alone(arm):
    # libfranka raises the connecting thread to SCHED_FIFO 99 where it may (root); everything that
    # thread started afterwards (pytest's subprocesses, wandb-core) then starved the machine.
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # after the fixture's connect
    arm.disconnect()
    arm.connect()
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_state_joint_and_cartesian_moves(arm):
    arm.move_to_joint_positions(PANDA_HOME_Q)
    state = arm.get_state()
    # franky-sim's joint PD sags up to ~0.05 rad under gravity (more at higher speed)
    np.testing.assert_allclose(state.q, PANDA_HOME_Q, atol=0.07)
    assert state.tcp_pos.shape == (3,) and state.tcp_quat.shape == (4,) and state.wrench.shape == (6,)
    np.testing.assert_allclose(state.tcp_pos, [0.307, 0.0, 0.487], atol=0.02)  # Panda home, tool down
    np.testing.assert_allclose(np.abs(state.tcp_quat), [1, 0, 0, 0], atol=0.01)
    assert state.errors == ()
    target = state.tcp_pos + np.array([0.05, -0.03, -0.04])
    arm.move_to_cartesian_pose(target, state.tcp_quat)
    np.testing.assert_allclose(arm.get_state().tcp_pos, target, atol=0.005)


def test_forward_kinematics_and_joint_limits(arm):
    arm.move_to_joint_positions(PANDA_HOME_Q)
    state = arm.get_state()
    # libfranka's model at the commanded joints: the pose the arm reports there (franky-sim's measured
    # joints sag under gravity while its reported pose does not, so compare at the command).
    pos, quat = arm.tool_pose_at(PANDA_HOME_Q)
    np.testing.assert_allclose(pos, state.tcp_pos, atol=2e-3)
    assert abs(float(np.dot(quat, state.tcp_quat))) == pytest.approx(1.0, abs=1e-3)
    corner = arm.joint_high_rad + 0.01
    with pytest.raises(ValueError, match=r"joint 1 = 2\.7537 rad is outside \[-2\.7437, 2\.7437\]"):
        arm.move_to_joint_positions(corner)
    np.testing.assert_allclose(arm.get_state().q, state.q, atol=0.01)  # nothing moved


def test_impedance_tracking_at_10hz_with_phase_gains(arm):
    arm.move_to_joint_positions(PANDA_HOME_Q)
    start = arm.get_state()
    arm.set_phase("task")
    errors = []
    for k in range(25):  # a 10 Hz policy moving the target 4 mm per tick along +y
        target = start.tcp_pos + np.array([0.0, 0.004 * min(k, 15), 0.0])
        arm.set_cartesian_target(target, start.tcp_quat)
        time.sleep(0.1)
        errors.append(np.linalg.norm(arm.get_state().tcp_pos - target))
    # Under CPU load the simulator runs slower than the wall clock: wait for the state, with a deadline.
    assert _eventually(lambda: np.linalg.norm(arm.get_state().tcp_pos - target) < 0.01), \
        f"impedance tracking lags: {np.round(errors, 4)}"
    task = arm.phase_gains["task"]
    np.testing.assert_allclose(np.diag(arm._tracking.get_gains().stiffness), [task.translational] * 3 + [task.rotational] * 3)
    arm.set_phase("reset")  # switched on the running motion, no restart
    reset = arm.phase_gains["reset"]
    np.testing.assert_allclose(np.diag(arm._tracking.get_gains().stiffness)[:3], [reset.translational] * 3)
    with pytest.raises(ValueError, match="unknown impedance phase"):
        arm.set_phase("bogus")
    with pytest.raises(ValueError, match="NaN"):
        arm.set_cartesian_target([np.nan, 0, 0.4], start.tcp_quat)
    arm.stop()
    assert not arm.robot.is_in_control


def test_gripper_move_grasp_open(arm):
    g = arm.gripper
    assert g.max_width_m == pytest.approx(0.08)
    g.move_to_position(0.03)
    assert _eventually(lambda: abs(g.width() - 0.03) < 0.002), g.width()
    g.close()
    assert _eventually(lambda: g.width() < 0.003), g.width()
    g.open()
    assert _eventually(lambda: g.width() > 0.07, timeout_s=8.0), g.width()
    with pytest.raises(ValueError, match="outside"):
        g.move_to_position(0.2)


def test_aborted_motion_raises_then_recovers(arm):
    # franky-sim does not simulate reflexes; a motion aborted from another thread (what the
    # watchdog does) takes the same libfranka error path: ControlException -> RobotError.
    arm.move_to_joint_positions(PANDA_HOME_Q)
    far = np.array(PANDA_HOME_Q) + np.array([0.8, 0, 0, 0, 0, 0, 0])
    threading.Timer(0.3, arm.robot.stop).start()
    with pytest.raises(RobotError, match="preempted|aborted"):
        arm.move_to_joint_positions(far)
    arm.clear_errors()  # libfranka automatic error recovery, acknowledged by the server
    arm.move_to_joint_positions(PANDA_HOME_Q)
    np.testing.assert_allclose(arm.get_state().q, PANDA_HOME_Q, atol=0.07)


def test_franka_env_reset_and_steps():
    # Its own franky-sim: the module's ``arm`` fixture still holds the other one (one client per arm).
    pytest.importorskip("franky")
    pytest.importorskip("franky_sim")
    from franky_sim_server import start_franky_sim, stop_franky_sim
    from torchrl.envs.utils import check_env_specs

    from torchrl_serl.envs.cameras import TestPatternCamera
    from torchrl_serl.envs.robots.arm_env import FrankaEnv

    franky_sim, proc = start_franky_sim()
    env = FrankaEnv(franky_sim, realtime=False, cameras={"front": TestPatternCamera(), "wrist": TestPatternCamera(seed=1)},
                    arm_kwargs={"relative_dynamics_factor": 0.6}, seed=0, max_episode_steps=100, reset_noise_m=0.02)
    try:
        check_env_specs(env)
        td = env.reset()
        start = td["observation"][:3].clone()

        def moved_and_closing():
            return float(td["observation"][1] - start[1]) > 0.05 and float(td["observation"][6]) > 0.5

        # Step until the state shows the move and the closing gripper (a slow machine needs more
        # steps than the 6 an idle one does), with a deadline.
        deadline = time.monotonic() + 15.0
        while not moved_and_closing() and time.monotonic() < deadline:
            td = env.step(td.set("action", torch.tensor([0.0, 1.0, 0.0, 1.0])))["next"]
        assert float(td["observation"][1] - start[1]) > 0.05, "moved along +y under compliant tracking"
        assert float(td["observation"][6]) > 0.5, "gripper closing"
        assert td["front"].shape == (3, 128, 128)
        assert np.median(env.step_periods_s) == pytest.approx(0.1, abs=0.02)
    finally:
        env.close()
        stop_franky_sim(proc)


def test_lost_connection_raises_and_stops():
    pytest.importorskip("franky")
    pytest.importorskip("franky_sim")
    from franky_sim_server import start_franky_sim, stop_franky_sim

    host, proc = start_franky_sim()
    arm = FrankaArm(host, realtime=False, with_gripper=False, feedback_timeout_s=0.2)
    try:
        arm.connect()
        state = arm.get_state()
        arm.set_cartesian_target(state.tcp_pos, state.tcp_quat)
        stop_franky_sim(proc)
        deadline = time.monotonic() + 3.0
        with pytest.raises(RobotConnectionError, match="lost|no new state"):
            while time.monotonic() < deadline:
                arm.get_state()
                time.sleep(0.05)
        arm.stop()  # must not raise on a dead link
        assert arm._tracking is None
    finally:
        if proc.poll() is None:
            stop_franky_sim(proc)


def test_env_step_after_link_loss_raises_robot_connection_error():
    # Killing the server used to surface franky's NetworkException from FrankaGripper.width().
    pytest.importorskip("franky")
    pytest.importorskip("franky_sim")
    from franky_sim_server import start_franky_sim, stop_franky_sim

    from torchrl_serl.envs.robots.arm_env import FrankaEnv

    host, proc = start_franky_sim()
    env = FrankaEnv(host, realtime=False, arm_kwargs={"relative_dynamics_factor": 0.6}, seed=0, reset_noise_m=0.0)
    try:
        td = env.reset()
        td = env.step(td.set("action", torch.tensor([0.0, 0.0, 0.0, 0.0])))["next"]
        stop_franky_sim(proc)
        with pytest.raises(RobotConnectionError, match=f"lost the Franka (gripper )?at {host!r}: .*Net"):
            for _ in range(30):  # the first steps may still read the last state franky received
                td = env.step(td.set("action", torch.tensor([0.0, 0.0, 0.0, 1.0])))["next"]
    finally:
        env.close()  # must not raise on a dead link
        if proc.poll() is None:
            stop_franky_sim(proc)


@pytest.mark.parametrize("call", ["width", "move_to_position", "close", "open"])
def test_gripper_calls_after_link_loss_raise_robot_connection_error(call):
    pytest.importorskip("franky")
    pytest.importorskip("franky_sim")
    from franky_sim_server import start_franky_sim, stop_franky_sim

    from torchrl_serl.envs.robots.franka import FrankaGripper

    host, proc = start_franky_sim()
    try:
        gripper = FrankaGripper(host)
        stop_franky_sim(proc)
        args = (0.03,) if call == "move_to_position" else ()
        with pytest.raises(RobotConnectionError, match=f"Franka gripper at {host!r}"):
            for _ in range(3):  # the first command may still be accepted into a dead socket
                getattr(gripper, call)(*args)
                gripper.width()
    finally:
        if proc.poll() is None:
            stop_franky_sim(proc)


def test_gripper_freed_mid_move_does_not_crash_the_process():
    # franky's Gripper segfaulted when freed with a move in flight (FrankaEnv.close after a grasp).
    import subprocess
    import sys
    import textwrap

    pytest.importorskip("franky")
    pytest.importorskip("franky_sim")
    script = textwrap.dedent(f"""
        import gc, sys, time
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        from franky_sim_server import start_franky_sim, stop_franky_sim
        from torchrl_serl.envs.robots.franka import FrankaArm, FrankaGripper
        host, proc = start_franky_sim()
        try:
            gripper = FrankaGripper(host, speed_mps=0.02)
            gripper.move_to_position(0.0)  # ~4 s at 2 cm/s
            time.sleep(0.2)
            del gripper  # dropped mid-move
            gc.collect()
            arm = FrankaArm(host, realtime=False)
            arm.connect()
            arm.gripper.close()
            time.sleep(0.2)
            arm.disconnect()  # disconnect mid-grasp
            del arm
            gc.collect()
        finally:
            stop_franky_sim(proc)
        print("survived")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "survived" in done.stdout, (done.returncode, done.stderr[-2000:])


def test_gains_validation():
    with pytest.raises(ValueError, match="stiffness"):
        ImpedanceGains(-1.0, 10.0)
