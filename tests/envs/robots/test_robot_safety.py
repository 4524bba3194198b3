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
from torchrl_serl.envs.robots.rotations import euler_zyx_to_quat, quat_angle
from torchrl_serl.envs.robots.safety import SafetyLimits, Watchdog, stop_on_sigint

# piper-sdk still passes python-can's deprecated ``bustype``; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The 'bustype' argument:DeprecationWarning")
DOWN = np.array([1.0, 0.0, 0.0, 0.0])


def test_box_clips_target():
    limits = SafetyLimits(max_step_m=10.0)
    pos, _ = limits.clip([1.0, -1.0, 0.25], DOWN, prev_pos=[0.4, 0.0, 0.25], prev_quat=DOWN)
    np.testing.assert_allclose(pos, [0.6, -0.3, 0.25])


def test_per_step_translation_limit_keeps_direction():
    limits = SafetyLimits(max_step_m=0.01)
    pos, _ = limits.clip([0.5, 0.1, 0.25], DOWN, prev_pos=[0.4, 0.0, 0.25], prev_quat=DOWN)
    step = pos - np.array([0.4, 0.0, 0.25])
    assert np.linalg.norm(step) == pytest.approx(0.01)
    np.testing.assert_allclose(step / np.linalg.norm(step), np.array([1.0, 1.0, 0.0]) / np.sqrt(2))


def test_rotation_step_and_tilt_limits():
    limits = SafetyLimits(max_step_rad=0.1, max_tilt_rad=0.3)
    tilted = euler_zyx_to_quat(np.pi + 1.0, 0.0, 0.0)  # 1 rad away from tool-down
    _, quat = limits.clip([0.4, 0, 0.2], tilted, prev_pos=[0.4, 0, 0.2], prev_quat=DOWN)
    assert quat_angle(DOWN, quat) == pytest.approx(0.1, abs=1e-6)
    limits = SafetyLimits(max_step_rad=3.0, max_tilt_rad=0.3)
    _, quat = limits.clip([0.4, 0, 0.2], tilted, prev_pos=[0.4, 0, 0.2], prev_quat=DOWN)
    assert quat_angle(DOWN, quat) == pytest.approx(0.3, abs=1e-6)


@pytest.mark.parametrize("pos, match", [([np.nan, 0, 0.2], "NaN"), ([np.inf, 0, 0.2], "NaN"), ([0.4, 0.0], "shape")])
def test_bad_targets_refused(pos, match):
    with pytest.raises(ValueError, match=match):
        SafetyLimits().clip(pos, DOWN, prev_pos=[0.4, 0, 0.2], prev_quat=DOWN)


def test_inverted_box_refused():
    with pytest.raises(ValueError, match="box_low_m"):
        SafetyLimits(box_low_m=(0.5, 0, 0), box_high_m=(0.4, 1, 1))


def test_watchdog_fires_once_and_rearms():
    calls = []
    with Watchdog(lambda: calls.append(time.monotonic()), timeout_s=0.1) as dog:
        for _ in range(5):  # fed in time: never fires
            time.sleep(0.03)
            dog.feed()
        assert calls == []
        time.sleep(0.3)
        assert len(calls) == 1 and dog.fired
        dog.feed()
        time.sleep(0.3)
        assert len(calls) == 2


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


@pytest.mark.robots
def test_env_clips_to_box_and_step_limit(piper_double, can_channel):
    safety = SafetyLimits(box_low_m=(0.1, -0.2, 0.1), box_high_m=(0.22, 0.2, 0.4), max_step_m=0.01,
                          reference_quat=euler_zyx_to_quat(np.pi, np.deg2rad(43.4), np.pi))
    env = _make_env(can_channel, safety=safety, action_scale_m=0.1, watchdog_timeout_s=None)
    try:
        td = env.reset()
        xs = [float(td["observation"][0])]
        for _ in range(6):
            td = env.step(td.set("action", torch.tensor([1.0, 0, 0, 0])))["next"]
            xs.append(float(td["observation"][0]))
        commanded_x = [struct.unpack(">ii", f)[0] / 1e6 for f in piper_double.frames(0x152)]
        assert max(commanded_x) <= 0.22 + 1e-6  # box
        # per step at most 1 cm beyond the measured position the step started from
        for x_prev, x_cmd in zip(xs, commanded_x[-6:]):
            assert x_cmd - x_prev <= 0.01 + 2e-6
        assert commanded_x[-1] == pytest.approx(0.22, abs=1e-6)
    finally:
        env.close()


@pytest.mark.robots
def test_env_watchdog_stops_arm_when_policy_goes_quiet(piper_double, can_channel):
    env = _make_env(can_channel, watchdog_timeout_s=0.2)
    try:
        td = env.reset()
        env.step(td.set("action", torch.tensor([0.5, 0, 0, 0])))
        t0 = time.time()
        time.sleep(0.6)  # the policy stops sending
        assert env.watchdog.fired
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
        time.sleep(0.05)
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
    finally:
        env.close()
