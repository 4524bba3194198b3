"""Every safety rule on its own: limits, NaN refusal, watchdog, lost link, arm error, Ctrl-C."""
import os
import signal
import struct
import threading
import time

import numpy as np
import pytest
import torch

from torchrl_serl.envs.robots.interfaces import RobotConnectionError, RobotError
from torchrl_serl.envs.rotations import euler_xyz_to_quat, quat_angle
from torchrl_serl.envs.robots.safety import SafetyLimits, Watchdog, check_finite_vector, stop_on_sigint

# piper-sdk still passes python-can's deprecated ``bustype``; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The 'bustype' argument:DeprecationWarning")
DOWN = np.array([1.0, 0.0, 0.0, 0.0])


def test_box_clips_target():
    limits = SafetyLimits(max_step_m=10.0)
    pos, _ = limits.clip([1.0, -1.0, 0.25], DOWN, current_pos=[0.4, 0.0, 0.25], current_quat=DOWN)
    np.testing.assert_allclose(pos, [0.6, -0.3, 0.25])


def test_per_step_translation_limit_keeps_direction():
    limits = SafetyLimits(max_step_m=0.01)
    pos, _ = limits.clip([0.5, 0.1, 0.25], DOWN, current_pos=[0.4, 0.0, 0.25], current_quat=DOWN)
    step = pos - np.array([0.4, 0.0, 0.25])
    assert np.linalg.norm(step) == pytest.approx(0.01)
    np.testing.assert_allclose(step / np.linalg.norm(step), np.array([1.0, 1.0, 0.0]) / np.sqrt(2))


def test_rotation_step_and_tilt_limits():
    limits = SafetyLimits(max_step_rad=0.1, max_tilt_rad=0.3)
    tilted = euler_xyz_to_quat([np.pi + 1.0, 0.0, 0.0])  # 1 rad away from tool-down
    _, quat = limits.clip([0.4, 0, 0.2], tilted, current_pos=[0.4, 0, 0.2], current_quat=DOWN)
    assert quat_angle(DOWN, quat) == pytest.approx(0.1, abs=1e-6)
    limits = SafetyLimits(max_step_rad=3.0, max_tilt_rad=0.3)
    _, quat = limits.clip([0.4, 0, 0.2], tilted, current_pos=[0.4, 0, 0.2], current_quat=DOWN)
    assert quat_angle(DOWN, quat) == pytest.approx(0.3, abs=1e-6)


PIPER_BOX = dict(box_low_m=(0.1, -0.2, 0.1), box_high_m=(0.35, 0.2, 0.4))


@pytest.mark.parametrize("current, expected", [([0.55, 0.0, 0.3], [0.50, 0.0, 0.3]), ([0.2, 0.0, 0.8], [0.2, 0.0, 0.75])])
def test_outside_the_box_the_target_moves_back_by_at_most_one_step(current, expected):
    # Clipping into the box after the step limit used to undo it: 0.200 m and 0.400 m jumps.
    limits = SafetyLimits(**PIPER_BOX)
    pos, _ = limits.clip(current, DOWN, current_pos=current, current_quat=DOWN)
    assert np.linalg.norm(pos - np.array(current)) <= limits.max_step_m + 1e-12
    np.testing.assert_allclose(pos, expected, atol=1e-12)


def test_step_limit_holds_for_any_request_and_pose():
    limits = SafetyLimits(**PIPER_BOX)
    rng = np.random.default_rng(0)
    for _ in range(500):
        current, request = rng.uniform(-1.0, 1.0, 3), rng.uniform(-1.0, 1.0, 3)
        pos, _ = limits.clip(request, DOWN, current_pos=current, current_quat=DOWN)
        assert np.linalg.norm(pos - current) <= limits.max_step_m + 1e-12
        inside = np.all(current >= limits.box_low_m) and np.all(current <= limits.box_high_m)
        if inside:  # from inside the box the target stays inside it
            assert np.all(pos >= limits.box_low_m - 1e-12) and np.all(pos <= limits.box_high_m + 1e-12)


def test_tilted_tool_turns_back_by_at_most_one_rotation_step():
    limits = SafetyLimits(max_step_rad=0.1, max_tilt_rad=0.3)
    tilted = euler_xyz_to_quat([np.pi + 1.0, 0.0, 0.0])  # measured 1 rad away from tool-down
    _, quat = limits.clip([0.4, 0, 0.2], DOWN, current_pos=[0.4, 0, 0.2], current_quat=tilted)
    assert quat_angle(tilted, quat) == pytest.approx(0.1, abs=1e-6)
    assert quat_angle(DOWN, quat) == pytest.approx(0.9, abs=1e-6)


@pytest.mark.parametrize("value", [np.array([True, False, True]), np.array([0.1, 0, 0.2j]), ["0.1", "0", "0.2"]])
def test_targets_refuse_bool_complex_and_text(value):
    with pytest.raises(ValueError, match="dtype"):
        check_finite_vector("target position", value, 3)


@pytest.mark.parametrize("pos, match", [([np.nan, 0, 0.2], "NaN"), ([np.inf, 0, 0.2], "NaN"), ([0.4, 0.0], "shape")])
def test_bad_targets_refused(pos, match):
    with pytest.raises(ValueError, match=match):
        SafetyLimits().clip(pos, DOWN, current_pos=[0.4, 0, 0.2], current_quat=DOWN)


def test_inverted_box_refused():
    with pytest.raises(ValueError, match="box_low_m"):
        SafetyLimits(box_low_m=(0.5, 0, 0), box_high_m=(0.4, 1, 1))


def _wait_until(predicate, timeout_s=3.0):
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def test_watchdog_fires_once_and_rearms():
    calls = []
    with Watchdog(lambda: calls.append(time.monotonic()), timeout_s=0.3) as dog:
        for _ in range(5):  # fed well within the timeout (10x margin for a loaded machine): never fires
            time.sleep(0.03)
            dog.feed()
        assert calls == []
        assert _wait_until(lambda: dog.fired)
        time.sleep(0.6)  # two more timeouts pass unfed: still one call
        assert len(calls) == 1
        dog.feed()
        assert _wait_until(lambda: len(calls) == 2)


def test_sigint_calls_stop_then_raises_and_restores_handler():
    stopped = []
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with stop_on_sigint(lambda: stopped.append(True)):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)  # interrupted by the signal
    assert stopped == [True]
    assert signal.getsignal(signal.SIGINT) is before


# --- the same rules end to end, through PiperEnv, the real piper-sdk and the CAN double -------


def _make_env(channel, **kwargs):
    from torchrl_serl.envs.robots.arm_env import PiperEnv

    kwargs.setdefault("reset_noise_m", 0.0)
    return PiperEnv(channel, bustype="virtual", seed=0, **kwargs)


def _hold_frames_after(double, t0):
    with double.lock:
        return [cid for t, cid, _ in double.received if t >= t0 and cid in (0x155, 0x156, 0x157)]


@pytest.mark.robots
def test_env_refuses_nan_and_wrong_shape_before_sending(piper_double, can_channel):
    env = _make_env(can_channel, watchdog_timeout_s=None)
    try:
        td = env.reset()
        piper_double.clear_received()
        for bad in (torch.tensor([float("nan"), 0, 0, 0]), torch.tensor([0.0, float("inf"), 0, 0]), torch.zeros(3)):
            with pytest.raises(ValueError, match="NaN|shape"):
                env.step(td.set("action", bad))
        time.sleep(0.05)
        assert piper_double.ids() == [], "a refused action must not put anything on the bus"
    finally:
        env.close()


def _record_targets(arm):
    """Log ``(tool position read just before [3], target sent [3])`` for every ``set_cartesian_target``."""
    log, last = [], {}
    get_state, set_target = arm.get_state, arm.set_cartesian_target

    def recording_get_state():
        state = get_state()
        last["pos"] = state.tcp_pos.copy()
        return state

    def recording_set_target(pos, quat):
        # The pose read since the last command; with none read, the arm's pose before the step.
        measured = last.pop("pos", None)
        log.append((get_state().tcp_pos if measured is None else measured, np.array(pos, dtype=np.float64)))
        set_target(pos, quat)

    arm.get_state, arm.set_cartesian_target = recording_get_state, recording_set_target
    return log


def _commanded_positions(double):
    """Tool positions [m] of the end-pose commands (0x152 x, y; 0x153 z) the double received."""
    xy = [struct.unpack(">ii", f) for f in double.frames(0x152)]
    z = [struct.unpack(">ii", f)[0] for f in double.frames(0x153)]
    return np.array([[x, y, zz] for (x, y), zz in zip(xy, z)]) / 1e6


@pytest.mark.robots
def test_env_clips_to_box_and_step_limit(piper_double, can_channel):
    safety = SafetyLimits(box_low_m=(0.1, -0.2, 0.1), box_high_m=(0.22, 0.2, 0.4), max_step_m=0.01,
                          reference_quat=euler_xyz_to_quat([np.pi, np.deg2rad(43.4), np.pi]))
    env = _make_env(can_channel, safety=safety, action_scale_m=0.1, watchdog_timeout_s=None)
    try:
        td = env.reset()
        log = _record_targets(env.arm)
        for _ in range(6):
            td = env.step(td.set("action", torch.tensor([1.0, 0, 0, 0])))["next"]
        assert len(log) == 6
        for measured, target in log:  # never more than one step from the pose read just before
            assert np.linalg.norm(target - measured) <= 0.01 + 1e-9
            assert target[0] <= 0.22 + 1e-9  # box
        commanded = _commanded_positions(piper_double)
        assert commanded[:, 0].max() <= 0.22 + 1e-6
        assert commanded[-1, 0] == pytest.approx(0.22, abs=1e-6)
    finally:
        env.close()


@pytest.mark.robots
def test_env_limits_the_step_from_the_pose_after_a_pause_and_a_push(piper_double, can_channel):
    env = _make_env(can_channel, watchdog_timeout_s=None)
    try:
        td = env.reset()
        td = env.step(td.set("action", torch.tensor([0.0, 0, 0, 0])))["next"]
        piper_double.push_tool([0.10, 0.0, 0.0])  # pushed 10 cm while the policy thinks
        time.sleep(0.5)
        pushed = float(env.arm.get_state().tcp_pos[0])
        piper_double.clear_received()
        log = _record_targets(env.arm)
        td = env.step(td.set("action", torch.tensor([0.0, 0, 0, 0])))["next"]
        # A zero action holds the arm where it is now, not where it was last observed.
        assert piper_double.wait_for(lambda: piper_double.frames(0x153)), "no end-pose command sent"
        assert _commanded_positions(piper_double)[0, 0] == pytest.approx(pushed, abs=1e-5)
        env.step(td.set("action", torch.tensor([-1.0, 0, 0, 0])))
        for measured, target in log:
            assert np.linalg.norm(target - measured) <= env.safety.max_step_m + 1e-9
    finally:
        env.close()


@pytest.mark.robots
@pytest.mark.parametrize("action", [torch.tensor([True, False, False, False]), torch.tensor([1, 0, 0, 0]),
                                    torch.tensor([0.5 + 0j, 0, 0, complex(0.0, float("nan"))])])
def test_env_refuses_non_floating_actions_before_sending(piper_double, can_channel, action):
    env = _make_env(can_channel, watchdog_timeout_s=None)
    try:
        td = env.reset()
        piper_double.clear_received()
        with pytest.raises(ValueError, match=f"dtype {action.dtype}"):
            env.step(td.set("action", action))
        time.sleep(0.05)
        assert piper_double.ids() == [], "a refused action must not put anything on the bus"
    finally:
        env.close()


@pytest.mark.robots
def test_env_watchdog_stops_arm_when_policy_goes_quiet(piper_double, can_channel):
    env = _make_env(can_channel, watchdog_timeout_s=0.2)
    try:
        td = env.reset()
        env.step(td.set("action", torch.tensor([0.5, 0, 0, 0])))
        t0 = time.time()  # the policy stops sending
        assert piper_double.wait_for(lambda: env.watchdog.fired and len(_hold_frames_after(piper_double, t0)) >= 3,
                                     timeout_s=3.0), "the watchdog did not stop the arm"
        time.sleep(0.3)  # more watchdog periods pass
        assert _hold_frames_after(piper_double, t0) == [0x155, 0x156, 0x157], "one hold-position command"
    finally:
        env.close()


@pytest.mark.robots
def test_env_lost_link_raises_and_quick_stops(piper_double, can_channel):
    env = _make_env(can_channel, watchdog_timeout_s=None)
    try:
        td = env.reset()
        piper_double.silent = True  # cable pulled: no more feedback
        time.sleep(0.6)  # past PiperArm's 0.5 s feedback timeout
        piper_double.clear_received()
        with pytest.raises(RobotConnectionError, match="feedback .* old"):
            env.step(td.set("action", torch.tensor([0.5, 0, 0, 0])))
        assert piper_double.wait_for(lambda: piper_double.frames(0x150)), "no quick stop sent"
        assert piper_double.frames(0x150)[-1][0] == 0x01, "quick stop (0x150 = 0x01) when feedback is gone"
    finally:
        piper_double.silent = False
        env.close()


@pytest.mark.robots
def test_env_arm_error_raises_and_stops(piper_double, can_channel):
    env = _make_env(can_channel, watchdog_timeout_s=None)
    try:
        td = env.reset()
        piper_double.arm_status = 0x07  # collision reported by the firmware
        assert piper_double.wait_for(lambda: env.arm.get_state().has_error)
        t0 = time.time()
        with pytest.raises(RobotError, match="COLLISION"):
            env.step(td.set("action", torch.tensor([0.5, 0, 0, 0])))
        assert piper_double.wait_for(lambda: _hold_frames_after(piper_double, t0)[-3:] == [0x155, 0x156, 0x157])
        piper_double.clear_received()
        env.reset()  # reset clears the error (0x150 = 0x02) and works again
        assert piper_double.frames(0x150)[0][0] == 0x02 and piper_double.arm_status == 0
    finally:
        env.close()


@pytest.mark.robots
def test_env_after_a_caught_error_refuses_steps_until_reset_rearms_the_watchdog(piper_double, can_channel):
    env = _make_env(can_channel, watchdog_timeout_s=0.2)
    try:
        td = env.reset()
        piper_double.arm_status = 0x07  # collision
        assert piper_double.wait_for(lambda: env.arm.get_state().has_error)
        with pytest.raises(RobotError, match="COLLISION"):
            env.step(td.set("action", torch.tensor([0.5, 0, 0, 0])))
        piper_double.arm_status = 0x00  # the fault clears by itself; the caller carries on
        assert piper_double.wait_for(lambda: not env.arm.get_state().has_error)
        piper_double.clear_received()
        with pytest.raises(RuntimeError, match="RobotError.*COLLISION.*call reset"):
            env.step(td.set("action", torch.tensor([0.5, 0, 0, 0])))
        time.sleep(0.05)
        assert not piper_double.frames(0x152), "no target may reach an arm whose watchdog is off"
        td = env.reset()  # re-arms the watchdog
        env.step(td.set("action", torch.tensor([0.5, 0, 0, 0])))
        t0 = time.time()  # the policy goes quiet: the re-armed watchdog stops the arm
        assert piper_double.wait_for(lambda: env.watchdog.fired and len(_hold_frames_after(piper_double, t0)) >= 3,
                                     timeout_s=3.0), "the re-armed watchdog did not stop the arm"
    finally:
        env.close()


@pytest.mark.robots
def test_env_ctrl_c_during_step_stops_arm(piper_double, can_channel):
    env = _make_env(can_channel, watchdog_timeout_s=None)
    try:
        td = env.reset()
        td = env.step(td.set("action", torch.tensor([0.0, 0, 0, 0])))["next"]
        t0 = time.time()
        threading.Timer(0.03, os.kill, (os.getpid(), signal.SIGINT)).start()  # during the tick sleep
        with pytest.raises(KeyboardInterrupt):
            env.step(td.set("action", torch.tensor([0.5, 0, 0, 0])))
        assert piper_double.wait_for(lambda: _hold_frames_after(piper_double, t0)[-3:] == [0x155, 0x156, 0x157])
        with pytest.raises(RuntimeError, match="KeyboardInterrupt.*call reset"):  # a caught Ctrl-C
            env.step(td.set("action", torch.tensor([0.5, 0, 0, 0])))
    finally:
        env.close()
