"""Learning-curve plot command."""

import subprocess
import sys

import pytest

from torchrl_serl.training.logging import RunLogger
from torchrl_serl.training.plot import find_runs, plot_runs, read_scalar_csv

pytest.importorskip("matplotlib")


def _fake_runs(tmp_path):
    for seed in (0, 1):
        logger = RunLogger(tmp_path, f"sac_state_sim_seed{seed}", progress=False)
        for step in range(0, 5000, 1000):
            logger.log({"eval/success_rate": min(1.0, step / 4000 + 0.1 * seed), "train/episode_return": step / 100}, step=step)
        logger.close()


def test_plot_command_writes_png(tmp_path):
    _fake_runs(tmp_path / "logs")
    out = tmp_path / "curves.png"
    proc = subprocess.run(
        [sys.executable, "-m", "torchrl_serl.training.plot", str(tmp_path / "logs"), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_runs_found_and_duplicate_steps_keep_last(tmp_path):
    _fake_runs(tmp_path)
    assert sorted(find_runs(tmp_path)) == ["sac_state_sim_seed0", "sac_state_sim_seed1"]
    csv = tmp_path / "dup.csv"
    csv.write_text("10,1.0\n20,2.0\n20,5.0\n")
    steps, values = read_scalar_csv(csv)
    assert steps.tolist() == [10, 20] and values.tolist() == [1.0, 5.0]


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_runs(tmp_path / "nope", tmp_path / "x.png")
    _fake_runs(tmp_path)
    with pytest.raises(ValueError, match="none of the metrics"):
        plot_runs(tmp_path, tmp_path / "x.png", metrics=["eval/nothing"])
    bad = tmp_path / "bad.csv"
    bad.write_text("10;1\n")
    with pytest.raises(ValueError, match="bad.csv:1"):
        read_scalar_csv(bad)


def test_minutes_axis_reindexes_by_the_runs_clock_and_seeds_spread(tmp_path):
    from torchrl_serl.training.plot import _in_minutes, _seed_spread, load_metric

    for seed, minutes_per_k in ((0, 2.0), (1, 4.0)):
        logger = RunLogger(tmp_path, f"drq_seed{seed}", progress=False)
        for step in range(1000, 5000, 1000):
            logger.log({"eval/success_rate": step / 4000 * (1 - 0.2 * seed), "time/minutes": step / 1000 * minutes_per_k},
                       step=step)
        logger.close()
    runs = find_runs(tmp_path)
    curve = load_metric(runs["drq_seed1"], "eval/success_rate")
    minutes, values = _in_minutes(runs["drq_seed1"], curve)
    assert minutes.tolist() == [4.0, 8.0, 12.0, 16.0] and values.tolist() == curve[1].tolist()
    x, mean, low, high = _seed_spread([load_metric(runs[r], "eval/success_rate") for r in sorted(runs)])
    assert x.tolist() == [1000, 2000, 3000, 4000]
    assert high[-1] == 1.0 and low[-1] == pytest.approx(0.8) and mean[-1] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="x_axes"):
        plot_runs(tmp_path, tmp_path / "x.png", x_axes=["hours"])
    out = plot_runs(tmp_path, tmp_path / "m.png", metrics=["eval/success_rate"], x_axes=["minutes"])
    assert out.read_bytes()[:4] == b"\x89PNG"
