"""The reward-classifier and VICE recipes, run for a handful of steps at tiny sizes."""

import importlib.util
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from torchrl_serl.data.demos import record_demos, save_demos
from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv
from torchrl_serl.envs.sim.scripted import ScriptedPickPolicy
from torchrl_serl.modules.classifier import load_pixel_classifier, make_pixel_classifier
from torchrl_serl.training.checkpoint import checkpoint_summary
from torchrl_serl.training.plot import read_scalar_csv

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def load_recipe(name):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["train_reward_classifier", "vice"])
def test_help_lists_the_options(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_recipe(name).main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--env.image_size" in text and "--seed" in text


def test_train_reward_classifier_saves_a_loadable_classifier(tmp_path):
    output = tmp_path / "clf.pt"
    metrics = load_recipe("train_reward_classifier").main([
        "--trunk", "small", "--env.image_size", "32", "--env.max_episode_steps", "60",
        "--scripted_episodes", "3", "--random_episodes", "1", "--val_fraction", "0.25",
        "--total_steps", "5", "--batch_size", "8", "--output", str(output), "--logdir", str(tmp_path),
        "--progress", "false",
    ])
    assert set(metrics) == {"accuracy", "true_positive_rate", "true_negative_rate", "positives", "negatives"}
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["positives"] + metrics["negatives"] == 60
    clf = make_pixel_classifier(("front", "wrist"), 32, trunk="small").load(output).eval()
    td = TensorDict(
        front=torch.zeros(2, 3, 32, 32, dtype=torch.uint8), wrist=torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
        batch_size=[2],
    )
    assert clf(td)["logit"].shape == (2, 1)
    # what --robot.reward_classifier loads: the same classifier from the file alone
    torch.testing.assert_close(load_pixel_classifier(output)(td.clone())["logit"], clf(td.clone())["logit"])


def test_train_reward_classifier_from_demo_files(tmp_path):
    env = PandaPickCubeEnv(pixels=True, image_size=32, seed=0, max_episode_steps=60)
    policy = ScriptedPickPolicy(env)
    demos = record_demos(env, policy, num_episodes=2, max_steps=60)
    env.close()
    save_demos(
        tmp_path / "demos", demos, env_name="PandaPickCube", cameras=["front", "wrist"], action_scale_m=0.1, fps=10
    )
    args = ["--demos", str(tmp_path / "demos"), "--trunk", "small", "--batch_size", "8", "--logdir", str(tmp_path),
            "--exp_name", "clf", "--log_every", "1", "--progress", "false"]
    metrics = load_recipe("train_reward_classifier").main([*args, "--total_steps", "3"])
    # one of the two recorded episodes is held out: the metrics count its frames and lifted frames
    ends = (demos["next", "done"][:, 0].nonzero().squeeze(-1) + 1).tolist()
    episodes = [demos[a:b] for a, b in zip([0, *ends[:-1]], ends)]
    held_out = [(int(ep["next", "success"].sum()), int((~ep["next", "success"]).sum())) for ep in episodes]
    assert len(episodes) == 2 and (metrics["positives"], metrics["negatives"]) in held_out
    assert metrics["positives"] > 0 and metrics["negatives"] > 0
    assert (tmp_path / "clf" / "classifier.pt").is_file()
    # a resumed run continues the step count and the loss log where the checkpoint left them
    load_recipe("train_reward_classifier").main([*args, "--total_steps", "5", "--resume"])
    summary = checkpoint_summary(tmp_path / "clf" / "checkpoints" / f"checkpoint-{5:012d}")
    assert summary["step"] == 5 and summary["counters"]["updates"] == 5
    assert read_scalar_csv(tmp_path / "clf" / "scalars" / "train" / "loss_classifier.csv")[0].tolist() == [1, 2, 3, 4, 5]


TINY_VICE = [
    "--drq.encoder", "small", "--vice.trunk", "small", "--env.image_size", "32", "--env.max_episode_steps", "20",
    "--random_steps", "10", "--training_starts", "10", "--buffer_size", "100",
    "--drq.batch_size", "8", "--drq.num_critics", "2", "--drq.hidden", "32,32", "--drq.utd_ratio", "2",
    "--vice.batch_size", "8", "--vice.hidden_dims", "16", "--vice.bottleneck_dim", "16",
    "--vice.goal_episodes", "2", "--vice.goal_episode_steps", "60",
    "--eval_every", "0", "--checkpoint_every", "10", "--exp_name", "run", "--progress", "false",
]


def test_vice_trains_drq_on_classifier_rewards_and_resumes(tmp_path):
    args = [*TINY_VICE, "--log_every", "10", "--logdir", str(tmp_path)]
    vice = load_recipe("vice")
    first = vice.main([*args, "--total_steps", "20"])
    assert first["step"] == 20 and first["updates"] == 20 - 10 + 1  # one per env step from training_starts on
    keys = ("vice/loss_classifier", "vice/loss_gradient_penalty", "train/loss_qvalue", "train/vice_reward_mean",
            "train/vice_agrees_with_env_success")
    for key in keys:
        assert key in first and torch.isfinite(torch.tensor(first[key]))
    # 0/1 rewards, averaged over a learner step's sample of batch_size 8 x utd_ratio 2 rows
    assert first["train/vice_reward_mean"] * 16 == round(first["train/vice_reward_mean"] * 16)
    assert (tmp_path / "run" / "scalars" / "vice" / "accuracy.csv").is_file()

    resumed = vice.main([*args, "--total_steps", "30", "--resume", "true"])
    assert resumed["step"] == 30 and resumed["updates"] == first["updates"] + 10  # counters carried over


def test_vice_actor_runs_in_its_own_process_held_to_the_ratio(tmp_path, monkeypatch):
    """The simulation steps in the actor's process, batches of 4 steps reach the learner, which
    makes exactly 0.5 learner steps per env step; a resumed run seeds a fresh actor by its step."""
    vice = load_recipe("vice")
    actors = []
    build = vice.BackgroundCollector.async_collector

    def recording(env_fn, policy, **kwargs):
        actors.append((env_fn, kwargs, build(env_fn, policy, **kwargs)))
        return actors[-1][2]

    monkeypatch.setattr(vice.BackgroundCollector, "async_collector", recording)
    args = [*TINY_VICE, "--frames_per_batch", "4", "--updates_per_step", "0.5", "--log_every", "8",
            "--logdir", str(tmp_path)]
    first = vice.main([*args, "--total_steps", "16"])
    assert (first["step"], first["updates"]) == (16, 3)  # floor(0.5 * (16 - 10 + 1))
    env_fn, kwargs, actor = actors[0]
    worker_pids = [proc.pid for proc in actor.collector.procs]
    assert worker_pids and os.getpid() not in worker_pids
    pickle.dumps(env_fn)  # sent to the actor's process
    assert (env_fn.args[1], kwargs["frames_per_batch"], kwargs["init_random_frames"]) == (0, 4, 10)

    resumed = vice.main([*args, "--total_steps", "24", "--resume", "true"])
    assert (resumed["step"], resumed["updates"]) == (24, 7)  # floor(0.5 * (24 - 10 + 1))
    env_fn, kwargs, _ = actors[1]
    assert (env_fn.args[1], kwargs["init_random_frames"]) == (16, 0)  # new episodes, the random phase is over
    ratio = read_scalar_csv(tmp_path / "run" / "scalars" / "train" / "updates_per_step.csv")[1]
    assert ratio[-1] == pytest.approx(7 / 15)


def test_vice_refuses_cached_trunk_features(tmp_path):
    # the classifier reads the images of every sampled batch: the buffer must hold images
    with pytest.raises(ValueError, match="feature_views 0"):
        load_recipe("vice").main(["--drq.feature_views", "2", "--logdir", str(tmp_path)])
