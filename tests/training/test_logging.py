"""RunLogger: CSV scalars, resume truncation, progress bar, wandb offline."""

import json

import pytest
import torch

from torchrl_serl.training.logging import RunLogger
from torchrl_serl.training.plot import read_scalar_csv


def test_csv_scalars_and_config_written(tmp_path):
    logger = RunLogger(tmp_path, "run_seed0", config={"seed": 0, "sac": {"utd_ratio": 8}}, total_steps=100, progress=False)
    logger.log({"train/return": 1.5, "eval/success_rate": 0.25, "skip_nan": float("nan")}, step=10)
    logger.log({"train/return": torch.tensor(2.5)}, step=20)
    logger.close()
    run = tmp_path / "run_seed0"
    assert json.loads((run / "config.json").read_text())["sac"]["utd_ratio"] == 8
    steps, values = read_scalar_csv(run / "scalars" / "train" / "return.csv")
    assert steps.tolist() == [10, 20] and values.tolist() == [1.5, 2.5]
    assert not (run / "scalars" / "skip_nan.csv").exists()


def test_truncate_after_drops_rows_logged_past_the_checkpoint(tmp_path):
    logger = RunLogger(tmp_path, "run", progress=False)
    for step in (10, 20, 30):
        logger.log({"train/return": step / 10}, step=step)
    state = logger.state_dict()
    logger.close()
    resumed = RunLogger(tmp_path, "run", progress=False, start_step=20)
    resumed.load_state_dict(state)
    resumed.truncate_after(20)
    resumed.log({"train/return": 9.0}, step=30)
    resumed.close()
    steps, values = read_scalar_csv(tmp_path / "run" / "scalars" / "train" / "return.csv")
    assert steps.tolist() == [10, 20, 30] and values.tolist() == [1.0, 2.0, 9.0]
    raw = (tmp_path / "run" / "scalars" / "train" / "return.csv").read_text().splitlines()
    assert raw == ["10,1.0", "20,2.0", "30,9.0"]


def test_last_value_is_the_last_row_kept_at_the_checkpoint(tmp_path):
    """What a resumed run continues its wall clock (``time/minutes``) from."""
    logger = RunLogger(tmp_path, "run", progress=False)
    assert logger.last_value("time/minutes") is None
    for step, minutes in ((10, 1.5), (20, 3.0), (30, 4.5)):
        logger.log({"time/minutes": minutes}, step=step)
    state = logger.state_dict()
    logger.close()
    resumed = RunLogger(tmp_path, "run", progress=False, start_step=20)
    resumed.load_state_dict(state)
    assert resumed.last_value("time/minutes") == 4.5
    resumed.truncate_after(20)  # the checkpoint was at step 20
    assert resumed.last_value("time/minutes") == 3.0
    resumed.close()


def test_progress_bar_shows_rate_success_and_return(tmp_path, capsys):
    logger = RunLogger(tmp_path, "run", total_steps=50, progress=True)
    logger.progress(10, success=0.5, ret=3.0)
    logger.progress(20)
    bar = logger._bar
    text = str(bar)
    logger.close()
    assert "20/50" in text and "sps=" in text and "success=0.5" in text and "ret=3" in text


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="wandb_mode"):
        RunLogger(tmp_path, "run", wandb_mode="cloud", progress=False)
    with pytest.raises(ValueError, match="exp_name"):
        RunLogger(tmp_path, "", progress=False)


def test_wandb_offline_needs_no_network(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # a proxy pointing nowhere: any network use would fail
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    logger = RunLogger(tmp_path, "run", config={"seed": 1}, use_wandb=True, wandb_mode="offline", progress=False)
    logger.log({"train/return": 1.0}, step=1)
    logger.close()
    offline_runs = list((tmp_path / "run").rglob("offline-run-*"))
    assert offline_runs, "wandb offline run directory not written"
    assert (tmp_path / "run" / "scalars" / "train" / "return.csv").is_file()


def test_episode_tracker_splits_episodes_across_batches():
    from tensordict import TensorDict

    from torchrl_serl.training.logging import EpisodeTracker

    def batch(rewards, dones, successes):
        n = len(rewards)
        return TensorDict({"next": {
            "reward": torch.tensor(rewards, dtype=torch.float32).reshape(n, 1),
            "done": torch.tensor(dones).reshape(n, 1),
            "success": torch.tensor(successes).reshape(n, 1),
        }}, [n])

    tracker = EpisodeTracker()
    assert tracker.update(batch([1.0, 2.0], [False, False], [False, True])) == []
    finished = tracker.update(batch([3.0, 0.5, 0.25], [True, False, True], [False, False, False]))
    assert finished == [{"return": 6.0, "success": 1.0, "length": 3}, {"return": 0.75, "success": 0.0, "length": 2}]
    assert tracker.episodes == 2


def test_episode_tracker_follows_the_interleaved_trajectories_of_many_actors():
    from tensordict import TensorDict

    from torchrl_serl.training.logging import EpisodeTracker

    def batch(traj_id, rewards, dones):  # one actor's consecutive steps, as a multi-process collector hands them out
        n = len(rewards)
        return TensorDict({"collector": {"traj_ids": torch.full((n,), traj_id)}, "next": {
            "reward": torch.tensor(rewards, dtype=torch.float32).reshape(n, 1),
            "done": torch.tensor(dones).reshape(n, 1),
        }}, [n])

    tracker = EpisodeTracker()
    assert tracker.update(batch(0, [1.0, 1.0], [False, False])) == []
    assert tracker.update(batch(1, [10.0, 10.0], [False, False])) == []  # the second actor's steps in between
    assert tracker.update(batch(0, [1.0], [True])) == [{"return": 3.0, "success": 0.0, "length": 3}]
    assert tracker.update(batch(1, [10.0], [True])) == [{"return": 30.0, "success": 0.0, "length": 3}]
    assert tracker.episodes == 2
