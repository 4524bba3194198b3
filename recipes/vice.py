"""VICE: DrQ on the pixel pick-cube task with the reward given by a success classifier trained online.

SERL's ``VICEAgent``: the env reward is never used for learning. A classifier (frozen ResNet-10 +
learned spatial embeddings + ``Linear(256) -> Dropout -> LayerNorm -> LeakyReLU -> Linear(1)``, images
only) is trained between policy updates on goal images (label 1) against observations from the
replay buffer (label 0) with :class:`~torchrl_serl.objectives.vice.VICELoss` (mixup, label
smoothing 0.2, gradient penalty 10, random-shift copies). Every sampled DrQ batch is relabelled
with the current classifier by :class:`~torchrl_serl.envs.transforms.learned_reward.LearnedReward`
(reward ``1[sigmoid(logit) >= 0.5]``, as SERL) before the critic updates. The simulator's own
``success`` is logged only, with the fraction of sampled transitions where the classifier agrees
with it (``train/vice_agrees_with_env_success``), to show how well the learned reward tracks the task.

The actor (the simulation and the policy) runs in a process of its own (TorchRL AsyncCollector behind
:class:`~torchrl_serl.training.background_collector.BackgroundCollector`), one batch of
``--frames_per_batch`` steps ahead of the learner, so the ratio of learner steps to env steps is
exactly ``--updates_per_step`` (SERL: 1); the learner's newest weights reach it after every learner
round, and ``train/updates_per_step`` logs the ratio achieved.

Goal images: lifted-cube frames of scripted-policy episodes (SERL loads goal images recorded by
teleoperation). Learning the task from pixels needs a GPU and far more steps than the defaults;
the defaults run on a CPU.

    python recipes/vice.py
    python recipes/vice.py --drq.encoder small --env.image_size 64 --total_steps 2000
    python recipes/vice.py --drq.pretrained_path resnet10_params.pkl --drq.trust_pickle true --device cuda --total_steps 100000
"""

from __future__ import annotations

import dataclasses
import functools
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from tensordict import TensorDict
from torch import nn

from torchrl_serl.data.replay_factory import make_pixel_replay_buffer, transitions
from torchrl_serl.envs.sim.scripted import ScriptedPickPolicy
from torchrl_serl.envs.transforms.learned_reward import LearnedReward
from torchrl_serl.modules.classifier import make_pixel_classifier
from torchrl_serl.objectives.vice import VICELoss, label_batch
from torchrl_serl.training.agent_factory import make_drq_agent
from torchrl_serl.training.background_collector import BackgroundCollector
from torchrl_serl.training.checkpoint import GracefulStop, RunCheckpointer
from torchrl_serl.training.config import DrQConfig, EnvConfig, RunConfig, config_to_dict, parse_config
from torchrl_serl.training.env_factory import make_sim_env
from torchrl_serl.training.evaluation import evaluate
from torchrl_serl.training.logging import EpisodeTracker, RunLogger
from torchrl_serl.training.run_counters import RunCounters
from torchrl_serl.training.seeding import seed_everything
from torchrl_serl.training.updater import SACUpdater, make_sac_optimizers


@dataclass
class VICEConfig:
    """The success classifier and its online training (SERL's VICE defaults)."""

    trunk: str = "resnet10"
    """``resnet10`` (frozen, SERL), ``mobilenet`` (frozen) or ``small`` (trained)."""
    bottleneck_dim: int = 256
    hidden_dims: tuple[int, ...] = (256,)
    lr: float = 3e-4
    batch_size: int = 64
    """Half goal images, half replay observations."""
    update_every: int = 1
    """Classifier updates once per this many learner steps."""
    label_smoothing: float = 0.2
    mixup_alpha: float = 1.0
    gp_weight: float = 10.0
    augment_pad: int = 4
    threshold: float = 0.5
    """Reward is 1 where sigmoid(logit) >= threshold (SERL: 0.5)."""
    goal_episodes: int = 4
    """Scripted episodes whose lifted-cube frames become the goal images."""
    goal_episode_steps: int = 100
    """Length of those episodes (the scripted pick lifts the cube after 20-40 steps)."""


@dataclass
class Config(RunConfig):
    env: EnvConfig = field(default_factory=lambda: EnvConfig(pixels=True, reward_type="sparse"))
    drq: DrQConfig = field(default_factory=lambda: DrQConfig(batch_size=64))
    """The DrQ learner; ``--drq.pretrained_path`` (and ``--drq.trust_pickle``) also loads the classifier's trunk."""
    vice: VICEConfig = field(default_factory=VICEConfig)
    camera_keys: tuple[str, ...] = ("front", "wrist")
    total_steps: int = 20_000
    random_steps: int = 500
    training_starts: int = 500
    buffer_size: int = 20_000
    log_every: int = 100
    eval_every: int = 5_000
    eval_episodes: int = 5
    checkpoint_every: int = 5_000
    frames_per_batch: int = 10
    """Env steps per actor batch: the unit in which steps reach the learner (and the most the actor
    runs ahead of it); a dead learner stops the actor within one batch."""
    updates_per_step: float = 1.0
    """Learner steps (each ``drq.utd_ratio`` critic updates) per env step from ``training_starts``
    on; SERL: 1. The actor is held to it, so the ratio is exact."""


def collect_goals(cfg: Config) -> TensorDict:
    """Observations ``[G]`` (camera images) where the scripted policy has lifted the cube."""
    env_cfg = dataclasses.replace(cfg.env, max_episode_steps=cfg.vice.goal_episode_steps)
    env = make_sim_env(env_cfg, seed=cfg.seed + 2_000_000)
    policy = ScriptedPickPolicy(env, noise_std=0.1, generator=torch.Generator().manual_seed(cfg.seed))
    frames = []
    for _ in range(cfg.vice.goal_episodes):
        reached = env.rollout(env.max_episode_steps, policy, break_when_any_done=False)["next"]
        frames.append(reached[reached["success"][:, 0]].select(*cfg.camera_keys))
    env.close()
    goals = torch.cat(frames)
    if len(goals) == 0:
        raise RuntimeError(f"no goal frames in {cfg.vice.goal_episodes} scripted episodes; raise --vice.goal_episodes")
    return goals


def main(argv=None) -> dict[str, float]:
    cfg = parse_config(Config, argv, description=__doc__)
    if cfg.drq.feature_views:  # the classifier reads images: the buffer stores them, not trunk features
        raise ValueError(f"vice.py needs --drq.feature_views 0, got {cfg.drq.feature_views}")
    exp_name = cfg.exp_name or f"vice_seed{cfg.seed}"
    seed_everything(cfg.seed)
    keys = list(cfg.camera_keys)

    # goal images; the evaluation env (its specs size the agent; the actor process builds its own env)
    goals = collect_goals(cfg)
    print(f"{len(goals)} goal images from {cfg.vice.goal_episodes} scripted episodes", flush=True)
    eval_env = make_sim_env(cfg.env, seed=cfg.seed + 1_000_000, device=cfg.device)

    # DrQ agent
    agent = make_drq_agent(cfg.drq, cfg.camera_keys, cfg.env.image_size,
                           eval_env.observation_spec["observation"].shape[-1], eval_env.action_spec.shape[-1],
                           device=cfg.device)
    optimizers = make_sac_optimizers(agent.loss, cfg.drq, capturable=cfg.cudagraphs)
    updater = SACUpdater(agent.loss, optimizers, agent.target_updater, cfg.drq.utd_ratio,
                         compile=cfg.compile, cudagraphs=cfg.cudagraphs, bf16=cfg.bf16,
                         idle_optimizer_steps=cfg.drq.idle_optimizer_steps,
                         actor_on_whole_sample=cfg.drq.actor_on_whole_sample)
    learner_batch = cfg.drq.batch_size * cfg.drq.utd_ratio  # one sample per learner step

    # VICE classifier, its loss and optimizer
    classifier = make_pixel_classifier(
        keys, cfg.env.image_size, trunk=cfg.vice.trunk, pretrained_path=cfg.drq.pretrained_path or None,
        trust_pickle=cfg.drq.trust_pickle,
        bottleneck_dim=cfg.vice.bottleneck_dim, hidden_dims=cfg.vice.hidden_dims, activation=nn.LeakyReLU,
    ).to(cfg.device)
    vice_loss = VICELoss(
        classifier, label_smoothing=cfg.vice.label_smoothing, mixup_alpha=cfg.vice.mixup_alpha,
        gp_weight=cfg.vice.gp_weight, augment_pad=cfg.vice.augment_pad,
    )
    vice_optim = torch.optim.Adam([p for p in classifier.parameters() if p.requires_grad], lr=cfg.vice.lr)

    # replay: frames stored once; every sample is relabelled by the classifier of the moment
    logger = RunLogger(
        cfg.logdir, exp_name, config=config_to_dict(cfg), total_steps=cfg.total_steps,
        use_wandb=cfg.wandb, wandb_mode=cfg.wandb_mode, wandb_project=cfg.wandb_project, progress=cfg.progress,
    )
    capacity = cfg.buffer_size  # not tied to total_steps: a resumed run may extend the budget
    buffer = make_pixel_replay_buffer(
        capacity + capacity // cfg.env.max_episode_steps + 2,  # + one tail row per episode
        learner_batch, logger.run_dir / "replay", pixel_keys=keys, seed=cfg.seed,
        # success_key: keep the simulator's ground-truth ("next", "success") beside the classifier's
        transform=LearnedReward(classifier, "threshold", cfg.vice.threshold, success_key="vice_success"),
    )
    # the actor's env is rebuilt on resume: the checkpoint holds the learner's side
    checkpointer = RunCheckpointer(
        logger.run_dir / "checkpoints", keep_last=cfg.keep_checkpoints, loss=agent.loss, classifier=classifier,
        vice_optim=vice_optim, buffer=buffer, logger=logger, **optimizers,
    )
    run = RunCounters()
    if cfg.resume and run.resume(checkpointer, logger):
        print(f"resumed {run} buffer={len(buffer)}", flush=True)
    tracker = EpisodeTracker()
    metrics: dict[str, float] = {}

    def vice_update() -> dict[str, float]:
        negatives = buffer.storage.get(torch.randint(len(buffer.storage), (cfg.vice.batch_size // 2,)))
        positives = goals[torch.randint(len(goals), (cfg.vice.batch_size - cfg.vice.batch_size // 2,))]
        out = vice_loss(label_batch(positives, negatives.select(*keys)).to(cfg.device))
        vice_optim.zero_grad(set_to_none=True)
        (out["loss_classifier"] + out["loss_gradient_penalty"]).backward()
        vice_optim.step()
        return {f"vice/{k}": v.item() for k, v in out.items()}

    def sample():
        batch = buffer.sample(learner_batch)
        metrics["train/vice_reward_mean"] = float(batch["next", "reward"].mean())
        agree = batch["next", "vice_success"] == batch["next", "success"]
        metrics["train/vice_agrees_with_env_success"] = float(agree.float().mean())
        return batch

    def learner_step() -> None:
        if run.updates % cfg.vice.update_every == 0:
            metrics.update(vice_update())
        metrics.update(updater.update(sample()))
        run.updates += 1

    t_start = time.perf_counter()
    with ExitStack() as stack:
        stack.callback(eval_env.close)
        # the actor: simulation and policy in a process of its own (TorchRL AsyncCollector), its batches
        # queued by a thread of this one; seeded by the step so a resumed run does not replay its first episodes
        actor = BackgroundCollector.async_collector(
            functools.partial(make_sim_env, cfg.env, cfg.seed + run.step), agent.policy,
            frames_per_batch=cfg.frames_per_batch, total_frames=-1,
            init_random_frames=max(cfg.random_steps - run.step, 0),
        )
        stack.callback(actor.shutdown)

        with GracefulStop() as stop:
            try:
                actor.hold_ahead(cfg.frames_per_batch)
                actor.start()
                pushed_updates = run.updates  # the learner's weights the actor has
                while run.step < cfg.total_steps and not stop.requested:
                    try:
                        batches = actor.drain(timeout_s=1.0)
                    except RuntimeError:
                        if stop.requested:  # Ctrl-C reached the actor process too: it has stopped
                            break
                        raise
                    for batch in batches:
                        if run.step >= cfg.total_steps:
                            break
                        buffer.extend(transitions(batch))
                        run.advance(batch.numel())
                        for episode in tracker.update(batch.reshape(-1)):
                            run.episodes += 1
                            logger.log({"train/env_success": episode["success"],
                                        "train/episode_length": episode["length"]}, run.step)
                            logger.progress(run.step, success=episode["success"])
                        # every learner step this batch is owed, now (the classifier every vice.update_every of them)
                        for _ in range(run.updates_owed(cfg.updates_per_step, cfg.training_starts)):
                            learner_step()

                        if run.due(cfg.log_every):
                            ratio = run.updates_per_step(cfg.training_starts)  # achieved
                            logger.log({**metrics, "train/updates": run.updates, "train/buffer_size": len(buffer),
                                        "train/updates_per_step": ratio,
                                        "train/steps_per_s": run.step / (time.perf_counter() - t_start)}, run.step)
                            logger.progress(run.step, vice_acc=metrics.get("vice/accuracy"), updates_per_step=ratio)
                        if run.due(cfg.eval_every):
                            video = logger.run_dir / "videos" / f"eval_{run.step}.gif" if cfg.video else None
                            result = evaluate(eval_env, agent.policy, cfg.eval_episodes, video_path=video)
                            logger.log(result, run.step)
                            logger.progress(run.step, eval_success=result["eval/success_rate"])
                        if run.due(cfg.checkpoint_every):
                            run.save(checkpointer)
                    if run.updates > pushed_updates:
                        actor.update_policy_weights_()
                        pushed_updates = run.updates
                    # one batch ahead of the learner: the ratio of updates to env steps is exact
                    actor.hold_ahead(cfg.frames_per_batch)
            finally:
                run.save(checkpointer)
                logger.close()
    print(f"done: {run.step} env steps, {run.updates} learner updates, {run.episodes} episodes; "
          f"logs in {logger.run_dir}", flush=True)
    return {"step": run.step, "updates": run.updates, "episodes": run.episodes, **metrics}

if __name__ == "__main__":
    main()
