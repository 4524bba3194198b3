"""``recipes/drq.py --robot.real true`` on franky-sim (a MuJoCo Franka speaking libfranka's protocol):
the actor process owns the arm and its cameras and steps on its own; the learner trains beside it
and never runs ahead of the data; killing the learner stops the actor process, which frees the arm;
a resumed learner drives the arm again.

The recipe runs as a real subprocess (``python recipes/drq.py``), as on the robot PC.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from torchrl_serl.training.checkpoint import checkpoint_summary

pytest.importorskip("franky", reason="needs the [robots] extra (franky-control)")
pytest.importorskip("franky_sim", reason="needs franky-sim (test dependency of the Franka tests)")

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "drq.py"
TINY = [
    "--random_steps", "4", "--training_starts", "4", "--drq.batch_size", "4", "--drq.hidden", "16,16",
    "--drq.num_critics", "2", "--drq.utd_ratio", "2", "--drq.encoder", "small", "--env.image_size", "32",
    "--env.max_episode_steps", "8", "--buffer_size", "256", "--log_every", "4", "--progress", "false",
    "--frames_per_batch", "2", "--preset", "serl", "--checkpoint_every", "4",
]


def drq(host: str, logdir: Path, *extra) -> list[str]:
    return [sys.executable, str(RECIPE), "--robot.real", "true", "--robot.address", host, "--robot.realtime", "false",
            "--robot.camera", "test_pattern", "--logdir", str(logdir), *TINY, *map(str, extra)]


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s  # a generous bound on a loaded machine, never the expected time
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.05)


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("checkpoint-*")) if (run_dir / "checkpoints").exists() else []


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan may stay one where no init reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_learner_trains_beside_the_arm_and_a_killed_learner_stops_the_actor(franky_sim, tmp_path):
    from torchrl_serl.envs.robots.franka import FrankaArm

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "drq_panda_real_seed0"
    log = tmp_path / "learner.log"  # a file, not a pipe: nobody reads a pipe while it runs, and a full one blocks
    learner = subprocess.Popen(drq(franky_sim, tmp_path, "--total_steps", 1_000_000), env=env,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: len(checkpoints(run_dir)) >= 2 or learner.poll() is not None, 300,
                   "two checkpoints of the learner")
        assert learner.poll() is None, log.read_text(errors="replace")[-3000:]
        actors = [pid for pid in children(learner.pid)
                  if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text() and running(pid)]
        assert actors, "the arm is driven from a process of its own"
        # the learner yields the cores to the arm's control loop (--learner_nice, default 10)
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, learner.pid) == max(ours, 10)
        assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in actors} == {ours}
        learner.send_signal(signal.SIGKILL)
        learner.wait()
        # TorchRL's worker sees its learner's pipe close after the batch it is collecting (2 steps)
        # and closes the env, which stops the arm
        wait_until(lambda: not any(running(pid) for pid in actors), 60, "the actor process to stop")
    finally:
        if learner.poll() is None:
            learner.kill()
    last = checkpoint_summary(checkpoints(run_dir)[-1])
    step = last["step"]
    # SERL's ratio (1 learner step per env step from training_starts on) is the learner's ceiling
    assert 1 <= last["counters"]["updates"] <= step - 4 + 1

    # the arm is free for the next client (whether franky-sim holds the arm once its client is gone
    # is the simulator's business: a real Franka's reflex stops it; not checked here)
    arm = FrankaArm(franky_sim, realtime=False)
    arm.connect()
    arm.disconnect()

    # a new learner resumes from the checkpoint and drives the arm again
    done = subprocess.run(drq(franky_sim, tmp_path, "--total_steps", step + 4, "--resume"), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert done.returncode == 0, done.stdout.decode(errors="replace")[-3000:]
    assert f"resumed step={step}" in done.stdout.decode()
    final = checkpoint_summary(checkpoints(run_dir)[-1])
    assert final["step"] >= step + 4 and final["counters"]["updates"] >= last["counters"]["updates"]
