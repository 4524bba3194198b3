"""Every recipe runs a few steps at tiny sizes on the simulation and writes logs, checkpoints, videos.

Recipes run in-process through their ``main(argv)`` (the same code path as the command line,
without paying the interpreter start-up six times); ``tests/training/test_resume.py`` drives
``sac_state_sim.py`` as a real subprocess, including SIGKILL/SIGINT.
"""

import json
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torchrl_serl import precision
from torchrl_serl.data.demos import load_demos
from torchrl_serl.training.checkpoint import CheckpointError, checkpoint_summary
from torchrl_serl.training.plot import read_scalar_csv

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
ALL = ["sac_state_sim", "drq", "bc", "record_demos", "pretrain_trunk"]
TINY_DRQ = [
    "--random_steps", "4", "--training_starts", "4", "--drq.batch_size", "4", "--drq.hidden", "16,16",
    "--drq.num_critics", "2", "--drq.utd_ratio", "2", "--drq.encoder", "small", "--env.image_size", "32",
    "--env.max_episode_steps", "6", "--buffer_size", "64", "--log_every", "4", "--progress", "false",
    "--frames_per_batch", "1", "--preset", "serl",
]


@pytest.fixture(autouse=True)
def _recipes_on_path(monkeypatch):
    # tests import a recipe's helpers by module name (``import drq``)
    monkeypatch.syspath_prepend(str(RECIPES))


def run(recipe, *argv):
    """``python recipes/<recipe>.py *argv``, in this process."""
    saved = sys.argv
    sys.argv = [str(RECIPES / f"{recipe}.py"), *map(str, argv)]
    try:
        runpy.run_path(str(RECIPES / f"{recipe}.py"), run_name="__main__")
    finally:
        sys.argv = saved


@pytest.mark.parametrize("recipe", ALL)
def test_help_lists_options_with_defaults(recipe, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(recipe, "--help")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--seed" in out and "(default: 0)" in out and "--env.task" in out


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    run("record_demos", "--out", root / "state", "--episodes", "2")
    run("record_demos", "--out", root / "pixels", "--episodes", "1", "--env.pixels", "true", "--env.image_size", "32")
    return root


def test_record_demos_keeps_successful_scripted_episodes(demos):
    data, meta = load_demos(demos / "state")
    assert meta["num_episodes"] == 2 and meta["source"] == "scripted"
    assert bool(data["next", "success"].any())
    pixels, meta = load_demos(demos / "pixels")
    assert meta["cameras"] == ["front", "wrist"] and pixels["front"].shape[-3:] == (3, 32, 32)


def test_sac_state_sim_with_demos_logs_evaluates_and_checkpoints(tmp_path, demos):
    run("sac_state_sim", "--logdir", tmp_path, "--total_steps", 24, "--demos", demos / "state",
        "--random_steps", 8, "--training_starts", 8, "--sac.batch_size", 8, "--sac.hidden", "16,16",
        "--sac.num_critics", 2, "--sac.utd_ratio", 2, "--env.max_episode_steps", 12, "--buffer_size", 64,
        "--eval_every", 12, "--eval_episodes", 1, "--video", "true", "--log_every", 4, "--checkpoint_every", 12,
        "--progress", "false")
    run_dir = tmp_path / "sac_state_sim_seed0"
    steps, success = read_scalar_csv(run_dir / "scalars" / "eval" / "success_rate.csv")
    assert steps.tolist() == [12, 24] and set(success.tolist()) <= {0.0, 1.0}
    assert read_scalar_csv(run_dir / "scalars" / "train" / "episode_return.csv")[0].tolist() == [12, 24]
    assert (run_dir / "videos" / "eval_24.gif").stat().st_size > 1000
    final = checkpoint_summary(run_dir / "checkpoints" / f"checkpoint-{24:012d}")
    assert final["counters"] == {"updates": 24 - 8 + 1, "episodes": 2, "interventions": 0}


@pytest.mark.parametrize("task", ["panda", "piper"])
def test_drq_runs_on_each_simulated_arm(task, tmp_path):
    run("drq", "--env.task", task, "--logdir", tmp_path, "--total_steps", 12, "--eval_every", 12,
        "--eval_episodes", 1, "--checkpoint_every", 12, *TINY_DRQ)
    run_dir = tmp_path / f"drq_{task}_seed0"
    assert read_scalar_csv(run_dir / "scalars" / "train" / "updates.csv")[1].tolist() == [1, 5, 9]
    assert read_scalar_csv(run_dir / "scalars" / "eval" / "success_rate.csv")[0].tolist() == [12]
    assert json.loads((run_dir / "config.json").read_text())["env"]["task"] == task


def test_drq_with_pixel_demos_and_resume(tmp_path, demos):
    common = ["--logdir", tmp_path, "--demos", demos / "pixels", "--eval_every", 0, "--checkpoint_every", 8, *TINY_DRQ]
    run("drq", "--total_steps", 8, *common)
    run("drq", "--total_steps", 16, "--resume", *common)
    run_dir = tmp_path / "drq_panda_seed0"
    assert checkpoint_summary(run_dir / "checkpoints" / f"checkpoint-{16:012d}")["counters"]["updates"] == 16 - 4 + 1


def test_drq_with_grasp_critic_learns_the_gripper_command_and_evaluates(tmp_path, demos, capsys):
    """HIL-SERL's hybrid agent on the simulated arm, with demos: SAC on the arm's motion, the grasp
    critic (charged for gripper toggles) on the gripper command; eval.py rebuilds it."""
    run("drq", "--grasp_critic", "true", "--grasp_critic_hidden", "8", "--demos", demos / "pixels", "--logdir", tmp_path,
        "--total_steps", 12, "--eval_every", 12, "--eval_episodes", 1, "--checkpoint_every", 12, *TINY_DRQ)
    run_dir = tmp_path / "drq_panda_seed0"
    assert read_scalar_csv(run_dir / "scalars" / "train" / "loss_grasp_critic.csv")[0].tolist() == [4, 8, 12]
    assert read_scalar_csv(run_dir / "scalars" / "train" / "loss_qvalue.csv")[0].tolist() == [4, 8, 12]
    from torchrl.checkpoint import Checkpoint

    assert {"grasp_loss", "grasp_optim"} <= set(Checkpoint.manifest(run_dir / "checkpoints" / f"checkpoint-{12:012d}")["components"])
    run("eval", "--run", run_dir, "--episodes", 1)
    assert "env step 12): eval/success_rate=" in capsys.readouterr().out


def test_drq_in_the_relative_frame_on_the_simulated_piper(tmp_path, capsys):
    """SERL's pose wrappers (RelativeFrame, QuatToEuler) from --env.relative_pose: the learner and
    eval.py see the 10-entry relative observation; scripted demos, which act in the base frame, refuse it."""
    run("drq", "--env.task", "piper", "--env.relative_pose", "true", "--logdir", tmp_path, "--total_steps", 8,
        "--eval_every", 8, "--eval_episodes", 1, "--checkpoint_every", 8, *TINY_DRQ)
    run_dir = tmp_path / "drq_piper_seed0"
    assert read_scalar_csv(run_dir / "scalars" / "eval" / "success_rate.csv")[0].tolist() == [8]
    run("eval", "--run", run_dir, "--episodes", 1)  # the actor's input size is the relative observation's
    assert "env step 8): eval/success_rate=" in capsys.readouterr().out
    with pytest.raises(ValueError, match="base frame"):
        run("record_demos", "--env.relative_pose", "true", "--env.pixels", "true", "--env.image_size", 32,
            "--out", tmp_path / "d", "--episodes", 1)
    with pytest.raises(ValueError, match="relative_pose"):
        run("drq", "--env.relative_pose", "true", "--demos", "auto", "--logdir", tmp_path, *TINY_DRQ)


def test_drq_data_parallel_learner_without_torchrun_is_one_rank(tmp_path, capsys):
    import torch.distributed as dist

    run("drq", "--ddp", "true", "--logdir", tmp_path, "--total_steps", 8, "--eval_every", 0, "--bf16", "true",
        *TINY_DRQ)
    assert "data-parallel learner: rank 0 of 1 on cpu" in capsys.readouterr().out
    summary = checkpoint_summary(tmp_path / "drq_panda_seed0" / "checkpoints" / f"checkpoint-{8:012d}")
    assert summary["counters"]["updates"] == 8 - 4 + 1
    assert not dist.is_initialized()  # the recipe leaves no process group behind
    with pytest.raises(ValueError, match="compile"):
        run("drq", "--ddp", "true", "--compile", "true", "--logdir", tmp_path / "c", *TINY_DRQ)
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="one simulation per rank"):
        run("drq", "--ddp", "true", "--robot.real", "true", "--robot.address", "can0", *TINY_DRQ)


def test_drq_with_cached_features_collects_asynchronously(tmp_path, demos, capsys):
    """Frozen ResNet-10 run once per frame in the collector's process (2 views), demos encoded
    once, the learner on cached features at half a learner step per env step."""
    tiny = list(TINY_DRQ)
    tiny[tiny.index("--drq.encoder") + 1] = "resnet10"
    tiny[tiny.index("--frames_per_batch") + 1] = "4"
    run("drq", "--logdir", tmp_path, "--demos", demos / "pixels", "--total_steps", 16, "--eval_every", 16,
        "--eval_episodes", 1, "--checkpoint_every", 16, "--drq.feature_views", 2, "--updates_per_step", 0.5, *tiny)
    run_dir = tmp_path / "drq_panda_seed0"
    summary = checkpoint_summary(run_dir / "checkpoints" / f"checkpoint-{16:012d}")
    assert summary["counters"]["updates"] == 6  # floor(0.5 * (16 - 4 + 1))
    assert read_scalar_csv(run_dir / "scalars" / "eval" / "success_rate.csv")[0].tolist() == [16]
    ratio = read_scalar_csv(run_dir / "scalars" / "train" / "updates_per_step.csv")[1]
    assert ratio[-1] == pytest.approx(6 / 13)
    # recipes/eval.py rebuilds the agent from config.json and evaluates the newest checkpoint
    run("eval", "--run", run_dir, "--episodes", 1)
    assert "env step 16): eval/success_rate=" in capsys.readouterr().out
    config = json.loads((run_dir / "config.json").read_text())
    config["drq"]["num_critics"] = 3
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not fit the networks"):
        run("eval", "--run", run_dir, "--episodes", 1)


def test_drq_with_two_actors_counts_each_ones_episodes_and_keeps_the_ratio(tmp_path):
    """Two actor processes feed the learner: the ratio of learner steps to env steps is exact, and
    every training episode is one actor's 6 steps (their batches interleave)."""
    run("drq", "--logdir", tmp_path, "--total_steps", 24, "--actors", 2, "--checkpoint_every", 24, *TINY_DRQ)
    run_dir = tmp_path / "drq_panda_seed0"
    summary = checkpoint_summary(run_dir / "checkpoints" / f"checkpoint-{24:012d}")
    assert summary["counters"]["updates"] == 21  # floor(1.0 * (24 - 4 + 1))
    lengths = read_scalar_csv(run_dir / "scalars" / "train" / "episode_length.csv")[1]
    # 3 or 4 episodes ended, as the two actors' shares of the 24 steps fell
    assert len(lengths) >= 3 and (lengths == 6).all()


def test_drq_several_actors_only_in_simulation(tmp_path):
    with pytest.raises(ValueError, match="--actors > 1"):
        run("drq", "--actors", 2, "--robot.real", "true", "--robot.address", "can0", "--logdir", tmp_path, *TINY_DRQ)


def test_drq_learner_niceness_out_of_range_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--learner_nice"):
        run("drq", "--learner_nice", 20, "--logdir", tmp_path, *TINY_DRQ)


def test_drq_learner_and_actor_roles_send_compressed_frames(tmp_path, demos):
    """``--role learner`` / ``--role actor`` on one machine through the authenticated link: the actor
    sends PNG frames (no features), the learner encodes them with its frozen trunk, mixes them with
    demos, trains never ahead of the data and checkpoints."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tiny = list(TINY_DRQ)
    tiny[tiny.index("--drq.encoder") + 1] = "resnet10"
    tiny[tiny.index("--frames_per_batch") + 1] = "4"
    args = [sys.executable, str(RECIPES / "drq.py"), "--logdir", tmp_path, "--port", port, "--timeout_s", 10,
            "--total_steps", 24, "--checkpoint_every", 24, "--drq.feature_views", 2, "--demos", demos / "pixels",
            "--push_every", 2,
            *tiny]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "TORCHRL_SERL_SECRET": "a-shared-secret-of-enough-length"}
    logs = [(tmp_path / f"{role}.log").open("wb") for role in ("learner", "actor")]
    learner, actor = (subprocess.Popen([*map(str, args), "--role", role], env=env, stdout=log, stderr=subprocess.STDOUT)
                      for role, log in zip(("learner", "actor"), logs))
    try:
        learner.wait(timeout=600)
        actor.wait(timeout=120)  # its 24 steps sent and acknowledged
    finally:
        for proc in (learner, actor):
            proc.kill()
            proc.wait()
    out = {role: (tmp_path / f"{role}.log").read_text(errors="replace") for role in ("learner", "actor")}
    assert learner.returncode == 0 and actor.returncode == 0, out["learner"][-3000:] + out["actor"][-3000:]
    # (whether the actor fetched weights before its 24 steps were done depends on how fast the learner
    # started: test_distributed.py::test_frozen_parameters_stay_home_and_must_match tests that path)
    assert "'frames': 24" in out["actor"] and "'acked': 6" in out["actor"] and "'bad_weights': 0" in out["actor"]
    run_dir = tmp_path / "drq_panda_seed0"
    summary = checkpoint_summary(run_dir / "checkpoints" / f"checkpoint-{24:012d}")
    # never ahead of the data (floor(1.0 * (24 - 4 + 1))); behind an actor that is not held back
    assert 0 < summary["counters"]["updates"] <= 21 and summary["step"] == 24
    # the learner counts its remote actor (the simulation is held a batch ahead per actor heard from)
    alive = [float(line.split(",")[1]) for line in (run_dir / "scalars/train/actors_alive.csv").read_text().split()]
    assert alive and max(alive) == 1.0


def test_drq_preset_cpu_without_cuda_and_command_line_wins(monkeypatch, capsys):
    import drq

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = drq.parse_with_preset(["--updates_per_step", "0.3"])
    assert "preset cpu" in capsys.readouterr().out
    assert (cfg.drq.feature_views, cfg.drq.pretrained_path, cfg.demos) == (2, "auto", "auto")
    assert cfg.updates_per_step == 0.3  # given on the command line
    real = drq.parse_with_preset(["--robot.real", "true"])
    assert real.demos == ""  # scripted demos exist only in the simulation
    serl = drq.parse_with_preset(["--preset", "serl"])
    assert (serl.drq.feature_views, serl.updates_per_step, serl.device) == (0, 1.0, "cpu")
    with pytest.raises(ValueError, match="--preset"):
        drq.parse_with_preset(["--preset", "fast"])


@pytest.mark.parametrize("native", [True, False])
def test_drq_cpu_preset_uses_bf16_only_where_the_cpu_has_it(monkeypatch, capsys, native):
    """Emulated bfloat16 (an AVX2-only CPU) made the preset's learner 10x slower than float32; the
    native bf16 learner buys 0.15 learner steps per env step in the hour, float32 0.1."""
    import drq

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "native_bf16", lambda device_type="cpu": native)
    cfg = drq.parse_with_preset([])
    assert (cfg.bf16, cfg.updates_per_step) == (native, 0.15 if native else 0.1)
    out = capsys.readouterr().out
    assert f"--updates_per_step {cfg.updates_per_step}" in out  # the preset prints what it chose
    assert ("no native bfloat16" in out) is not native
    assert drq.parse_with_preset(["--bf16", "true"]).bf16 is True  # the command line still wins
    assert "no native bfloat16" not in capsys.readouterr().out  # and nothing claims otherwise
    assert drq.parse_with_preset(["--updates_per_step", "0.1"]).updates_per_step == 0.1


def test_sim_cache_pretrains_and_records_once(tmp_path, monkeypatch):
    from torchrl_serl.data.demos import load_demos
    from torchrl_serl.training.config import EnvConfig
    from torchrl_serl.training.sim_cache import cached_pretrained_trunk, cached_scripted_demos

    monkeypatch.setenv("TORCHRL_SERL_CACHE", str(tmp_path))
    env_cfg = EnvConfig(pixels=True, image_size=32, max_episode_steps=40)
    trunk = cached_pretrained_trunk(env_cfg, frames=20, iterations=1, batch_size=2)
    assert trunk.parent == tmp_path / "trunks" and trunk.is_file()
    mtime = trunk.stat().st_mtime_ns
    assert cached_pretrained_trunk(env_cfg, frames=20, iterations=1) == trunk and trunk.stat().st_mtime_ns == mtime
    demos = cached_scripted_demos(env_cfg, episodes=1)
    data, meta = load_demos(demos)
    assert meta["num_episodes"] == 1 and bool(data["next", "success"].any())
    assert cached_scripted_demos(env_cfg, episodes=1) == demos


def test_pretrain_trunk_writes_a_trunk_that_drq_loads(tmp_path, capsys):
    out = tmp_path / "trunk.pt"
    run("pretrain_trunk", "--out", out, "--frames", 24, "--iterations", 2, "--batch_size", 4,
        "--env.image_size", 32, "--env.max_episode_steps", 8)
    assert "held-out mean error: cube" in capsys.readouterr().out
    from torchrl_serl.modules.drq_networks import make_drq_networks

    _, _, encoder = make_drq_networks(image_size=32, pretrained_path=out, num_critics=2, hidden=(8, 8))
    trained = torch.load(out, weights_only=True)
    assert all(torch.equal(encoder.trunk("front").state_dict()[k], v) for k, v in trained.items())


def test_bc_trains_from_demo_files_and_evaluates(tmp_path, demos):
    run("bc", "--demos", demos / "state", "--logdir", tmp_path, "--total_steps", 40, "--batch_size", 16,
        "--hidden", "16,16", "--log_every", 10, "--eval_every", 40, "--eval_episodes", 1, "--checkpoint_every", 20,
        "--progress", "false")
    run_dir = tmp_path / "bc_seed0"
    steps, losses = read_scalar_csv(run_dir / "scalars" / "train" / "loss_bc.csv")
    assert steps.tolist() == [10, 20, 30, 40] and losses[-1] < losses[0]
    assert read_scalar_csv(run_dir / "scalars" / "eval" / "success_rate.csv")[0].tolist() == [40]


def test_real_arm_without_address_is_refused_before_connecting(tmp_path):
    with pytest.raises(ValueError, match="--robot.address"):
        run("drq", "--robot.real", "true", "--logdir", tmp_path, *TINY_DRQ)


def test_intervention_requires_demos(tmp_path):
    with pytest.raises(ValueError, match="--intervention needs --demos"):
        run("drq", "--intervention", "keyboard", "--logdir", tmp_path, *TINY_DRQ)


def test_scripted_demos_refused_on_a_real_arm(tmp_path):
    with pytest.raises(ValueError, match="scripted"):
        run("record_demos", "--robot.real", "true", "--robot.address", "can0", "--out", tmp_path / "d")


def test_drq_keyboard_keys_reach_the_actor_process_and_go_to_the_demo_side(tmp_path, demos):
    """The learner process owns the terminal (here its stdin); the keys typed there drive the env
    in the actor's process, and the intervened steps are counted (and routed to the demo side)."""
    log = (tmp_path / "log.txt").open("wb")  # a file, not a pipe: nobody reads it while the run goes
    proc = subprocess.Popen(
        [sys.executable, str(RECIPES / "drq.py"), "--intervention", "keyboard", "--demos", str(demos / "pixels"),
         "--logdir", str(tmp_path), "--total_steps", "24", "--eval_every", "0", "--checkpoint_every", "24",
         *TINY_DRQ], stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
    try:
        while proc.poll() is None:  # keep typing 'w' (+x) until the run is over
            try:
                proc.stdin.write(b"w")
                proc.stdin.flush()
            except BrokenPipeError:
                break
            time.sleep(0.05)
        assert proc.wait(timeout=600) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    counters = checkpoint_summary(tmp_path / "drq_panda_seed0" / "checkpoints" / f"checkpoint-{24:012d}")["counters"]
    assert 1 <= counters["interventions"] <= 24


def test_drq_ctrl_c_stops_actor_and_learner_and_saves(tmp_path):
    """Ctrl-C at the terminal reaches the learner and the actor process (one process group): the
    actor stops, the learner finishes its step, saves and exits with 130; nothing waits on the
    dead actor (its weight pushes are not acknowledged)."""
    import os
    import signal

    run_dir = tmp_path / "drq_panda_seed0"
    log = (tmp_path / "log.txt").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(RECIPES / "drq.py"), "--logdir", str(tmp_path), "--total_steps", "1000000",
         "--eval_every", "0", "--checkpoint_every", "8", *TINY_DRQ],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300  # start-up on a loaded machine; never the expected time
        while not list(run_dir.glob("checkpoints/checkpoint-*")) and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=300) == 128 + signal.SIGINT, (tmp_path / "log.txt").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    newest = sorted(run_dir.glob("checkpoints/checkpoint-*"))[-1]
    summary = checkpoint_summary(newest)
    assert summary["step"] >= 8 and summary["counters"]["updates"] == summary["step"] - 4 + 1


def test_drq_killed_actor_leaves_the_learner_state_saved(tmp_path):
    """SIGKILL to the actor process: the learner reports it, saves a checkpoint of where it stands
    and exits (it does not hang on the dead actor); --resume then carries on from that checkpoint."""
    import os
    import signal

    run_dir = tmp_path / "drq_panda_seed0"
    common = ["--logdir", str(tmp_path), "--eval_every", "0", "--checkpoint_every", "1000", *TINY_DRQ]
    log = tmp_path / "log.txt"
    proc = subprocess.Popen([sys.executable, str(RECIPES / "drq.py"), "--total_steps", "1000000", *common],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300  # start-up on a loaded machine; never the expected time
        updates = run_dir / "scalars" / "train" / "updates.csv"
        while not (updates.exists() and len(updates.read_text().splitlines()) >= 3) and proc.poll() is None:
            assert time.monotonic() < deadline, "no learner steps logged within 300 s"
            time.sleep(0.1)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        actors = [int(c) for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        assert actors, "the env runs in a process of its own"
        for pid in actors:
            os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=300) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "the collector stopped" in log.read_text()
    saved = checkpoint_summary(sorted(run_dir.glob("checkpoints/checkpoint-*"))[-1])
    assert saved["step"] >= 8 and saved["counters"]["updates"] == saved["step"] - 4 + 1
    run("drq", "--total_steps", saved["step"] + 4, "--resume", *common)
    assert checkpoint_summary(sorted(run_dir.glob("checkpoints/checkpoint-*"))[-1])["step"] >= saved["step"] + 4
