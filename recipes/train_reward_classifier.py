"""Train SERL's binary reward (success) classifier on the simulated pick-cube task.

SERL records success and failure frames by teleoperation and a key press; in simulation the task's
ground truth labels them: frames where the cube is lifted (``success``) during scripted-policy
episodes are positives, every other frame (scripted episodes before the lift, uniform-random
episodes) is a negative. The classifier is SERL's: frozen ResNet-10 + learned spatial embeddings
per camera + ``Linear(256) -> Dropout -> LayerNorm -> ReLU -> Linear(1)``, on images only, trained
with BCE on 50/50 batches, random-shift augmentation and Adam (lr 1e-4). Whole episodes are held
out for validation; the weights go to ``--output`` (default: ``classifier.pt`` in the run directory,
beside the logs and checkpoints; load them with ``SuccessClassifier.load``).
With ``--demos`` the frames come from demo files instead (``torchrl_serl.data.demos``, e.g. written
by ``record_demos.py``), labelled by their ``("next", "success")`` entries, and no env is built.

    python recipes/train_reward_classifier.py                 # SERL architecture, CPU-sized run
    python recipes/train_reward_classifier.py --trunk small --env.image_size 64   # fast on CPU
    python recipes/train_reward_classifier.py --pretrained_path resnet10_params.pkl --trust_pickle true --total_steps 1000
    python recipes/train_reward_classifier.py --demos demos/pick_a demos/pick_b

Without ``--pretrained_path`` the frozen ResNet-10 has random weights (nothing is downloaded).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tensordict import TensorDict

from torchrl_serl.data.demos import load_demos
from torchrl_serl.envs.sim.scripted import ScriptedPickPolicy
from torchrl_serl.modules.classifier import SuccessClassifier, make_pixel_classifier
from torchrl_serl.objectives.vice import BinaryClassifierLoss, label_batch
from torchrl_serl.training.checkpoint import GracefulStop, RunCheckpointer
from torchrl_serl.training.config import EnvConfig, RunConfig, config_to_dict, parse_config
from torchrl_serl.training.env_factory import make_sim_env
from torchrl_serl.training.logging import RunLogger
from torchrl_serl.training.run_counters import RunCounters
from torchrl_serl.training.seeding import seed_everything


@dataclass
class Config(RunConfig):
    env: EnvConfig = field(default_factory=lambda: EnvConfig(pixels=True))
    camera_keys: tuple[str, ...] = ("front", "wrist")
    demos: tuple[str, ...] = ()
    """Demo directories to take labelled frames from (replaces the simulated collection)."""
    scripted_episodes: int = 8
    """Scripted pick episodes (their lifted frames are the positives)."""
    random_episodes: int = 4
    """Uniform-random episodes (negatives only)."""
    scripted_noise: float = 0.1
    """Std of the Gaussian noise on the scripted moves (varied approach paths)."""
    val_fraction: float = 0.25
    """Fraction of the episodes held out for validation."""
    trunk: str = "resnet10"
    """``resnet10`` (SERL, frozen), ``mobilenet`` (frozen) or ``small`` (trained)."""
    pretrained_path: str = ""
    """Local trunk weights (SERL's ``resnet10_params.pkl`` or a torch state_dict)."""
    trust_pickle: bool = False
    """Allow ``pretrained_path`` to be SERL's ``.pkl`` (unpickling runs any code the file holds)."""
    batch_size: int = 64
    """Half positives, half negatives (SERL: 256)."""
    total_steps: int = 100
    """Gradient steps (the classifier collects nothing: ``random_steps``, ``training_starts`` and
    ``buffer_size`` are unused)."""
    lr: float = 1e-4
    augment_pad: int = 4
    output: str = ""
    """Where to save the classifier; empty: ``classifier.pt`` in the run directory (``<logdir>/<exp_name>``)."""
    log_every: int = 10
    eval_every: int = 0
    """Gradient steps between validation passes over the held-out episodes (0: only at the end)."""

def collect(env, policy, episodes: int, keys: list[str]) -> list[TensorDict]:
    """One ``[T]`` tensordict of reached observations (``("next", ...)``) per episode."""
    out = []
    for _ in range(episodes):
        rollout = env.rollout(env.max_episode_steps, policy, break_when_any_done=False)
        out.append(rollout["next"].select(*keys, "success"))
    return out


def demo_episodes(paths: tuple[str, ...], keys: list[str]) -> list[TensorDict]:
    """Reached observations of every episode in the demo files, with their ``success`` labels."""
    episodes = []
    for path in paths:
        data, _ = load_demos(path)
        missing = [k for k in [*keys, "success"] if ("next", k) not in data.keys(True)]
        if missing:
            raise KeyError(
                f"demos at {path} lack {[('next', k) for k in missing]}; they need cameras and success labels"
            )
        reached = data["next"].select(*keys, "success")
        ends = (data["next", "done"][:, 0].nonzero().squeeze(-1) + 1).tolist()
        if not ends or ends[-1] != len(data):
            ends.append(len(data))
        episodes += [reached[a:b].to_tensordict() for a, b in zip([0, *ends[:-1]], ends)]
    return episodes


def accuracy(classifier: SuccessClassifier, frames: TensorDict, batch_size: int = 256) -> dict[str, float]:
    """Accuracy, true-positive and true-negative rates at probability 0.5, in eval mode."""
    classifier.eval()
    with torch.no_grad():
        logits = torch.cat([classifier(chunk.clone())["logit"] for chunk in frames.split(batch_size)])
    classifier.train()
    pred, truth = logits[:, 0] >= 0, frames["success"][:, 0]
    return {
        "accuracy": (pred == truth).float().mean().item(),
        "true_positive_rate": pred[truth].float().mean().item() if truth.any() else float("nan"),
        "true_negative_rate": (~pred[~truth]).float().mean().item() if (~truth).any() else float("nan"),
        "positives": int(truth.sum()),
        "negatives": int((~truth).sum()),
    }


def main(argv=None) -> dict[str, float]:
    cfg = parse_config(Config, argv, description=__doc__)
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {cfg.val_fraction}")
    seed_everything(cfg.seed)
    keys = list(cfg.camera_keys)

    # data: scripted successes vs everything else, labelled by the simulator (or by demo files)
    t0 = time.perf_counter()
    if cfg.demos:
        episodes = demo_episodes(cfg.demos, keys)
    else:
        env = make_sim_env(cfg.env, seed=cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        scripted = ScriptedPickPolicy(env, noise_std=cfg.scripted_noise, generator=generator)
        episodes = collect(env, scripted, cfg.scripted_episodes, keys) + collect(env, None, cfg.random_episodes, keys)
        env.close()
    if len(episodes) < 2:
        raise ValueError(f"need at least 2 episodes (training and validation), got {len(episodes)}")
    print(f"{len(episodes)} episodes loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    order = torch.randperm(len(episodes)).tolist()
    n_val = min(max(1, round(cfg.val_fraction * len(episodes))), len(episodes) - 1)
    val = torch.cat([episodes[i] for i in order[:n_val]])
    train = torch.cat([episodes[i] for i in order[n_val:]])
    positives, negatives = train[train["success"][:, 0]], train[~train["success"][:, 0]]
    if len(positives) == 0 or len(negatives) == 0:
        raise RuntimeError(
            f"training episodes gave {len(positives)} positive and {len(negatives)} negative frames; "
            "collect more episodes (--scripted_episodes / --random_episodes)"
        )

    # classifier, loss, optimizer
    classifier = make_pixel_classifier(  # image size from the data: demo files fix their own
        keys, train[keys[0]].shape[-1], trunk=cfg.trunk, pretrained_path=cfg.pretrained_path or None,
        trust_pickle=cfg.trust_pickle,
    ).to(cfg.device)
    loss_fn = BinaryClassifierLoss(classifier, augment_pad=cfg.augment_pad)
    optimizer = torch.optim.Adam([p for p in classifier.parameters() if p.requires_grad], lr=cfg.lr)

    logger = RunLogger(
        cfg.logdir, cfg.exp_name or f"train_reward_classifier_seed{cfg.seed}", config=config_to_dict(cfg),
        total_steps=cfg.total_steps, use_wandb=cfg.wandb, wandb_mode=cfg.wandb_mode, wandb_project=cfg.wandb_project,
        progress=cfg.progress,
    )
    checkpointer = RunCheckpointer(logger.run_dir / "checkpoints", keep_last=cfg.keep_checkpoints,
                                   classifier=classifier, optimizer=optimizer, logger=logger)
    run = RunCounters()
    if cfg.resume and run.resume(checkpointer, logger):  # the same seed collected the same frames
        print(f"resumed {run}", flush=True)
    val = val.to(cfg.device)

    half = max(cfg.batch_size // 2, 1)
    with GracefulStop() as stop:
        try:
            while run.step < cfg.total_steps:
                pos = positives[torch.randint(len(positives), (half,))]
                neg = negatives[torch.randint(len(negatives), (half,))]
                out = loss_fn(label_batch(pos.select(*keys), neg.select(*keys)).to(cfg.device))
                optimizer.zero_grad(set_to_none=True)
                out["loss_classifier"].backward()
                optimizer.step()
                run.updates += 1
                run.advance(1)

                if run.due(cfg.log_every):
                    logger.log({f"train/{k}": v.item() for k, v in out.items()}, run.step)
                    logger.progress(run.step, loss=out["loss_classifier"].item(), acc=out["accuracy"].item())
                if run.due(cfg.eval_every):
                    logger.log({f"eval/{k}": v for k, v in accuracy(classifier, val).items()}, run.step)
                if run.due(cfg.checkpoint_every):
                    run.save(checkpointer)
                if stop.requested:  # Ctrl-C / SIGTERM: finish this step, save, exit
                    break
        finally:
            run.save(checkpointer)
            logger.close()

    metrics = accuracy(classifier, val)
    print("validation (held-out episodes): " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                       for k, v in metrics.items()), flush=True)
    output = Path(cfg.output) if cfg.output else logger.run_dir / "classifier.pt"
    output.parent.mkdir(parents=True, exist_ok=True)
    classifier.save(output)
    print(f"saved classifier to {output}", flush=True)
    return metrics


if __name__ == "__main__":
    main()
