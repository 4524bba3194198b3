"""Kill a training run and resume it: step counter, buffer, weights and logs continue."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torchrl.checkpoint import Checkpoint

from torchrl_serl.training.agent_factory import make_sac_agent
from torchrl_serl.training.checkpoint import checkpoint_summary, parameters_checksum
from torchrl_serl.training.config import SACConfig
from torchrl_serl.training.plot import read_scalar_csv

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "sac_state_sim.py"
TINY = [
    "--random_steps", "10", "--training_starts", "10", "--sac.batch_size", "16", "--sac.hidden", "32,32",
    "--sac.num_critics", "4", "--sac.utd_ratio", "2", "--eval_every", "0", "--log_every", "5",
    "--env.max_episode_steps", "20", "--buffer_size", "500", "--progress", "false",
]
START = 10  # training_starts: one learner update per env step from here on


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl"}


def _start(logdir, total, checkpoint_every):
    args = [sys.executable, str(RECIPE), "--logdir", str(logdir), "--total_steps", str(total),
            "--checkpoint_every", str(checkpoint_every), *TINY]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())


def _wait_for_checkpoint(ckpt_dir, min_step, proc, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [int(p.name.split("-")[1]) for p in ckpt_dir.glob("checkpoint-*")] if ckpt_dir.is_dir() else []
        if steps and max(steps) >= min_step:
            return max(steps)
        if proc.poll() is not None:
            raise AssertionError(f"run ended early:\n{proc.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared in time")


def _logged_past(csv, step):
    try:
        return csv.is_file() and read_scalar_csv(csv)[0][-1:].tolist() >= [step]
    except ValueError:  # caught a row half-written
        return False


def _actor_checksum(path):
    agent = make_sac_agent(SACConfig(hidden=(32, 32), num_critics=4, batch_size=16), 10, 4)
    Checkpoint(loss=agent.loss).load(path, components=["loss"])
    return parameters_checksum(agent.actor.parameters())


@pytest.mark.timeout(240)
def test_sigkill_then_resume_continues_counters_buffer_weights_and_logs(tmp_path):
    run_dir = tmp_path / "sac_state_sim_seed0"
    proc = _start(tmp_path, total=100_000, checkpoint_every=20)
    try:
        _wait_for_checkpoint(run_dir / "checkpoints", 40, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # the run logged past its last complete checkpoint before dying
    latest = max(run_dir.glob("checkpoints/checkpoint-*"))
    killed_at = checkpoint_summary(latest)["step"]
    assert killed_at % 20 == 0 and killed_at >= 40
    expected_checksum = _actor_checksum(latest)

    total = killed_at + 30
    resumed = subprocess.run(
        [sys.executable, str(RECIPE), "--logdir", str(tmp_path), "--total_steps", str(total),
         "--checkpoint_every", "20", "--resume", *TINY],
        capture_output=True, text=True, timeout=180, env=_env(),
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    line = next(l for l in resumed.stdout.splitlines() if l.startswith("resumed"))
    fields = dict(kv.split("=") for kv in line.split()[1:])
    assert int(fields["step"]) == killed_at
    assert int(fields["buffer"]) == killed_at  # every transition collected before the save
    assert int(fields["updates"]) == killed_at - START + 1
    assert float(fields["actor_checksum"]) == pytest.approx(expected_checksum, rel=0, abs=1e-9)

    final = checkpoint_summary(run_dir / "checkpoints" / f"checkpoint-{total:012d}")
    assert final["counters"]["updates"] == total - START + 1
    steps, sizes = read_scalar_csv(run_dir / "scalars" / "train" / "buffer_size.csv")
    assert sizes[-1] == total and steps[-1] == total
    # rows logged after the checkpoint by the killed run were replaced, not duplicated
    raw_steps = [int(l.split(",")[0]) for l in (run_dir / "scalars" / "train" / "updates.csv").read_text().splitlines()]
    assert raw_steps == sorted(set(raw_steps))
    steps, updates = read_scalar_csv(run_dir / "scalars" / "train" / "updates.csv")
    assert all(u == s - START + 1 for s, u in zip(steps, updates) if s >= START)
    # the wall clock goes on from the checkpoint: the resumed rows start where the kept ones end
    steps, minutes = read_scalar_csv(run_dir / "scalars" / "time" / "minutes.csv")
    assert steps[0] < killed_at < steps[-1] and (minutes[1:] >= minutes[:-1]).all()


@pytest.mark.timeout(120)
def test_sigint_saves_a_checkpoint_at_the_current_step(tmp_path):
    run_dir = tmp_path / "sac_state_sim_seed0"
    proc = _start(tmp_path, total=100_000, checkpoint_every=1000)
    try:
        deadline = time.time() + 60
        csv = run_dir / "scalars" / "train" / "updates.csv"
        while not _logged_past(csv, 20):
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, proc.stdout.read()
    saved = list(run_dir.glob("checkpoints/checkpoint-*"))
    assert len(saved) == 1
    step = checkpoint_summary(saved[0])["step"]
    assert 20 <= step < 1000
    assert checkpoint_summary(saved[0])["counters"]["updates"] == step - START + 1


@pytest.mark.timeout(240)
def test_resume_with_another_buffer_size_names_the_option_and_saves_only_filled_rows(tmp_path):
    run_dir = tmp_path / "sac_state_sim_seed0"
    tiny = [a for a in TINY if a not in ("--buffer_size", "500")]
    first = subprocess.run(
        [sys.executable, str(RECIPE), "--logdir", str(tmp_path), "--total_steps", "20", "--checkpoint_every", "20",
         "--buffer_size", "100000", *tiny],
        capture_output=True, text=True, timeout=180, env=_env(),
    )
    assert first.returncode == 0, first.stdout + first.stderr
    saved = max(run_dir.glob("checkpoints/checkpoint-*"))
    buffer_bytes = sum(f.stat().st_size for f in saved.rglob("*") if f.is_file() and "buffer" in str(f.relative_to(saved)))
    assert buffer_bytes < 200_000, f"{buffer_bytes} bytes: the whole 100k-row storage was written, not its 20 rows"
    resumed = subprocess.run(
        [sys.executable, str(RECIPE), "--logdir", str(tmp_path), "--total_steps", "40", "--checkpoint_every", "20",
         "--buffer_size", "250", "--resume", *tiny],
        capture_output=True, text=True, timeout=180, env=_env(),
    )
    assert resumed.returncode != 0
    assert "BufferCapacityError" in resumed.stderr and "--buffer_size 100000" in resumed.stderr, resumed.stderr[-3000:]
