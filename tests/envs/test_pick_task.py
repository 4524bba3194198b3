"""One pick-task definition: the simulated and the real-arm envs share its specs and its action checks."""

import numpy as np
import pytest
import torch

from torchrl_serl.envs.pick_task import (
    ACTION_SIZE,
    PROPRIO_OBSERVATION_SIZE,
    STATE_OBSERVATION_SIZE,
    check_pick_action,
)


@pytest.mark.parametrize("action", [
    torch.tensor([True, False, False, False]),
    torch.tensor([1, 0, 0, 0]),
    torch.tensor([0.5 + 0j, 0, 0, complex(0.0, float("nan"))]),
    np.array([1, 0, 0, 0]),
    np.array([0.5 + 1j, 0, 0, 0]),
    ["0.1", "0", "0", "0"],
])
def test_non_floating_actions_refused_by_dtype(action):
    dtype = action.dtype if hasattr(action, "dtype") else np.asarray(action).dtype
    with pytest.raises(ValueError, match=f"action must be floating point .*dtype {dtype}"):
        check_pick_action(action)


@pytest.mark.parametrize("action, match", [
    (None, "no 'action' entry"),
    (torch.zeros(3), r"shape \(4,\) = \(dx, dy, dz, gripper\), got \(3,\)"),
    (torch.zeros(2, 4), r"shape \(4,\).*got \(2, 4\)"),
    (torch.tensor([float("nan"), 0.0, 0.0, 0.0]), r"finite \(no NaN/inf\)"),
    (np.array([0.0, np.inf, 0.0, 0.0]), r"finite \(no NaN/inf\)"),
])
def test_missing_misshapen_and_non_finite_actions_refused(action, match):
    with pytest.raises(ValueError, match=match):
        check_pick_action(action)


def test_float_actions_of_any_width_and_kind_accepted_and_clipped():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert check_pick_action(torch.tensor([0.5, -1, 0, 1], dtype=dtype)) == [0.5, -1.0, 0.0, 1.0]
    assert check_pick_action(np.array([0.25, 0, 0, 0], dtype=np.float32)) == [0.25, 0.0, 0.0, 0.0]
    assert check_pick_action([2.0, -3.0, 0.5, 1.0]) == [1.0, -1.0, 0.5, 1.0]  # out of range: clipped


class _UnusedArm:
    """Specs are built without talking to the arm; ``close()`` only stops and disconnects it."""

    def stop(self):
        pass

    def disconnect(self):
        pass


def test_sim_and_real_envs_share_the_task_specs():
    from torchrl_serl.envs.cameras import TestPatternCamera
    from torchrl_serl.envs.robots import RealArmEnv, SafetyLimits
    from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv

    sim_state, sim_pixels = PandaPickCubeEnv(seed=0), PandaPickCubeEnv(pixels=True, image_size=32, seed=0)
    cameras = {"front": TestPatternCamera(fps=None), "wrist": TestPatternCamera(fps=None, seed=1)}
    real = RealArmEnv(_UnusedArm(), SafetyLimits(box_low_m=(0.3, -0.2, 0.1), box_high_m=(0.5, 0.2, 0.4)),
                      cameras=cameras, image_size=(32, 32), watchdog_timeout_s=None)
    try:
        assert sim_state.observation_spec["observation"].shape == (STATE_OBSERVATION_SIZE,)
        assert real.observation_spec["observation"].shape == (PROPRIO_OBSERVATION_SIZE,)
        assert real.action_spec.shape == (ACTION_SIZE,)
        for spec in ("full_observation_spec", "full_action_spec", "full_reward_spec", "full_done_spec"):
            assert getattr(real, spec) == getattr(sim_pixels, spec), spec
    finally:
        for env in (sim_state, sim_pixels, real):
            env.close()
