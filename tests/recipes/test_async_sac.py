"""``recipes/async_sac.py --role local``: the actor process held to the learner's update-to-data ratio.

The learner and actor roles run as separate processes in ``tests/training/test_distributed.py``.
"""

import math
import runpy
import sys
from pathlib import Path

import pytest

from torchrl_serl.training.plot import read_scalar_csv

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "async_sac.py"


def test_local_actor_is_held_to_the_learner_ratio(tmp_path, monkeypatch):
    frames_per_batch, updates_per_step, training_starts = 10, 0.5, 10
    monkeypatch.setattr(sys, "argv", [str(RECIPE), *map(str, [
        "--total_steps", 60, "--random_steps", training_starts, "--training_starts", training_starts,
        "--updates_per_step", updates_per_step, "--frames_per_batch", frames_per_batch, "--log_every", 10,
        "--sac.batch_size", 8, "--sac.hidden", "16,16", "--sac.num_critics", 2, "--sac.utd_ratio", 2,
        "--buffer_size", 100, "--logdir", tmp_path, "--progress", "false",
    ])])
    runpy.run_path(str(RECIPE), run_name="__main__")
    scalars = tmp_path / "async_sac_local_seed0" / "scalars" / "train"
    steps, updates = read_scalar_csv(scalars / "updates.csv")
    assert steps.tolist() == [10, 20, 30, 40, 50, 60]
    # after every batch the learner had made exactly the learner steps owed (SERL's ratio from training_starts)
    owed = [math.floor(updates_per_step * (s - training_starts + 1)) for s in steps.tolist()]
    assert updates.tolist() == owed
    ratio = read_scalar_csv(scalars / "updates_per_step.csv")[1]
    assert ratio.tolist() == pytest.approx([u / (s - training_starts + 1) for s, u in zip(steps.tolist(), owed)])
    assert ratio[-1] == pytest.approx(updates_per_step, abs=1 / (60 - training_starts + 1))  # within one step
    # the actor runs at most two batches past its limit, so its weights are at most two batches' learner steps old
    lags = read_scalar_csv(scalars / "actor_policy_lag.csv")[1]
    assert 0 <= lags.min() and lags.max() <= 2 * (frames_per_batch * updates_per_step + 1)
