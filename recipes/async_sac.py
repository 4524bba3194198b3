"""Asynchronous SAC on the simulated PandaPickCube from state (SERL's ``async_sac_state_sim``).

The actor acts continuously; the learner makes ``--updates_per_step`` learner steps per env step
(SERL: 1), each ``sac.utd_ratio`` critic updates on one sample (SERL's critic:actor ratio), never
more than the data allows, and pushes fresh weights every ``push_every`` learner steps.
``train/updates_per_step`` logs the ratio achieved. Three roles:

- ``local`` (default): actor in a child process on this machine (TorchRL ``AsyncCollector`` whose
  batches a thread of the learner queues, ``BackgroundCollector``; weights through shared memory).
  The simulated actor is held one batch ahead of the learner, so the ratio is exactly
  ``--updates_per_step``.
- ``learner`` / ``actor``: the two halves on different machines (GPU box / robot PC), linked by
  ZeroMQ on the learner's ``--port``, authenticated and encrypted (CURVE) by one shared secret
  (``--secret_file`` or ``$TORCHRL_SERL_SECRET``; without one, loopback only). The actor survives
  learner restarts (it holds once the learner has been silent for ``--max_learner_silence_s``,
  reconnects, and acts on with the new learner's weights); the learner survives
  actor crashes and checkpoints its state (``--resume`` continues after a restart). The
  simulated actor is held a batch ahead of the learner here too: the learner answers its pushes
  "busy" beyond that (``LearnerLink.hold_ahead``) and the actor waits (``RemoteActor(max_unacked)``).

    python recipes/async_sac.py                                    # both on this machine
    (umask 077; python -m torchrl_serl.security > ~/.torchrl_serl_secret)   # once; copy to both machines
    python recipes/async_sac.py --role learner --host 0.0.0.0 --secret_file ~/.torchrl_serl_secret   # GPU box
    python recipes/async_sac.py --role actor --host <gpu-box> --secret_file ~/.torchrl_serl_secret   # robot PC
    python recipes/async_sac.py --help

See docs/distributed.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial

from torchrl_serl.data.replay_factory import make_replay_buffer, transitions
from torchrl_serl.training.agent_factory import make_sac_agent
from torchrl_serl.training.background_collector import BackgroundCollector
from torchrl_serl.training.checkpoint import GracefulStop, RunCheckpointer
from torchrl_serl.training.config import (
    ROLES,
    ActorLearnerConfig,
    EnvConfig,
    RunConfig,
    SACConfig,
    config_to_dict,
    parse_config,
)
from torchrl_serl.training.distributed import (
    POLICY_VERSION_KEY,
    LearnerLink,
    RemoteActor,
    act_until_stopped,
    weights_dtype_named,
)
from torchrl_serl.training.env_factory import make_sim_env
from torchrl_serl.training.logging import EpisodeTracker, RunLogger
from torchrl_serl.security import load_secret
from torchrl_serl.training.run_counters import RunCounters
from torchrl_serl.training.seeding import seed_everything
from torchrl_serl.training.updater import SACUpdater, make_sac_optimizers


@dataclass
class Config(RunConfig, ActorLearnerConfig):
    env: EnvConfig = field(default_factory=EnvConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    frames_per_batch: int = 10
    """Env steps the actor sends (or writes) at once."""
    push_every: int = 1
    """Learner steps between weight pushes (bounds the actor's staleness)."""
    updates_per_step: float = 1.0
    """Learner steps (each ``sac.utd_ratio`` critic updates) per env step from ``training_starts`` on;
    SERL: 1. The learner never runs ahead of it: ``local`` holds the simulated actor to it exactly,
    ``learner`` falls behind an actor that is faster than it; ``train/updates_per_step`` logs the
    ratio achieved."""


def learner_step(cfg: Config, updater, buffer) -> dict:
    """One SERL learner step: ``sac.utd_ratio`` critic updates on one sample, the actor and the
    temperature on the last."""
    return updater.update(buffer.sample(cfg.sac.batch_size * cfg.sac.utd_ratio))


def run_local(cfg: Config, agent, updater, logger: RunLogger) -> None:
    buffer = make_replay_buffer(cfg.buffer_size, cfg.sac.batch_size)
    run, tracker, metrics = RunCounters(), EpisodeTracker(), {}
    # the actor tags its steps with the number of weight pushes it has applied; the learner step of each push
    updates_at_push = [0]
    actor = BackgroundCollector.async_collector(
        partial(make_sim_env, cfg.env, cfg.seed), agent.actor, frames_per_batch=cfg.frames_per_batch,
        total_frames=-1, init_random_frames=cfg.random_steps, track_policy_version=True,
    )
    # one batch ahead of the learner: the ratio is exactly updates_per_step, and the wall clock the
    # slower of actor and learner rather than their sum
    actor.hold_ahead(cfg.frames_per_batch)
    try:
        actor.start()
        while run.step < cfg.total_steps:
            for batch in actor.drain(timeout_s=1.0):
                buffer.extend(transitions(batch))
                run.advance(batch.numel())
                lag = run.updates - updates_at_push[int(batch[POLICY_VERSION_KEY].min())]
                for episode in tracker.update(batch.reshape(-1)):
                    run.episodes += 1
                    logger.log({"train/episode_return": episode["return"], "train/success": episode["success"]},
                               run.step)
                    logger.progress(run.step, success=episode["success"], ret=episode["return"])
                for _ in range(run.updates_owed(cfg.updates_per_step, cfg.training_starts)):
                    metrics = learner_step(cfg, updater, buffer)
                    run.updates += 1
                    if run.updates % cfg.push_every == 0:
                        actor.update_policy_weights_()
                        updates_at_push.append(run.updates)
                if run.due(cfg.log_every):
                    ratio = run.updates_per_step(cfg.training_starts)
                    logger.log({**metrics, "train/updates": run.updates, "train/updates_per_step": ratio,
                                "train/actor_policy_lag": lag}, run.step)
                    logger.progress(run.step, updates_per_step=ratio)
            actor.hold_ahead(cfg.frames_per_batch)
    finally:
        actor.shutdown()


def run_learner(cfg: Config, agent, updater, optimizers, logger: RunLogger, link: LearnerLink) -> None:
    buffer = make_replay_buffer(cfg.buffer_size, cfg.sac.batch_size, device=cfg.device)
    checkpointer = RunCheckpointer(logger.run_dir / "checkpoints", keep_last=cfg.keep_checkpoints,
                                   loss=agent.loss, buffer=buffer, logger=logger, **optimizers)
    run = RunCounters()
    if cfg.resume and run.resume(checkpointer, logger):
        print(f"resumed frames={run.step} updates={run.updates}", flush=True)
    link.publish_weights(agent.actor, run.updates)
    tracker, metrics = EpisodeTracker(), {}

    def take(batches) -> None:
        """Stores the actors' batches."""
        for batch in batches:
            buffer.extend(transitions(batch))
            run.advance(batch.numel())
            lag = run.updates - int(batch[POLICY_VERSION_KEY].min())
            for episode in tracker.update(batch):
                run.episodes += 1
                logger.log({"train/episode_return": episode["return"], "train/success": episode["success"],
                            "train/actor_policy_lag": lag}, run.step)
                logger.progress(run.step, success=episode["success"], ret=episode["return"])
            if run.due(cfg.log_every):
                ratio = run.updates_per_step(cfg.training_starts)
                logger.log({**metrics, "train/updates": run.updates, "train/updates_per_step": ratio,
                            "train/actors_alive": link.actors_seen_within(5.0)}, run.step)
                logger.progress(run.step, updates_per_step=ratio)
            if run.due(cfg.checkpoint_every):
                run.save(checkpointer)

    with GracefulStop() as stop:
        try:
            while run.step < cfg.total_steps and not stop.requested:
                take(link.pull())
                # never ahead of the data; the actors are held a batch (each) ahead of the learner's
                # ratio: beyond it their pushes are answered busy and they wait (RemoteActor(max_unacked))
                if not run.updates_owed(cfg.updates_per_step, cfg.training_starts):
                    link.hold_ahead(cfg.frames_per_batch * max(1, link.actors_seen_within(5.0)))
                    time.sleep(0.01)
                    continue
                metrics = learner_step(cfg, updater, buffer)
                run.updates += 1
                if run.updates % cfg.push_every == 0:
                    link.publish_weights(agent.actor, run.updates)
        finally:
            # stop acknowledging first: every batch the actors saw acknowledged is in the last checkpoint
            link.close()
            take(link.pull(max_batches=10**9))
            run.save(checkpointer)


def run_actor(cfg: Config, agent, secret: bytes | None) -> None:
    actor = RemoteActor(
        partial(make_sim_env, cfg.env, cfg.seed), agent.actor, host=cfg.host, port=cfg.port, secret=secret,
        frames_per_batch=cfg.frames_per_batch, timeout_s=cfg.timeout_s,
        init_random_frames=cfg.random_steps, seed=cfg.seed, max_learner_silence_s=cfg.max_learner_silence_s or None,
        max_unacked=2,  # step at the learner's pace (it acknowledges at most a batch ahead of its ratio)
    )
    act_until_stopped(actor, cfg.total_steps)


def main(argv=None) -> None:
    cfg = parse_config(Config, argv, description=__doc__)
    if cfg.role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {cfg.role!r}")
    if cfg.push_every < 1:
        raise ValueError(f"push_every must be >= 1, got {cfg.push_every}")
    if cfg.updates_per_step <= 0:
        raise ValueError(f"updates_per_step must be > 0, got {cfg.updates_per_step}")
    if cfg.role != "learner" and cfg.device != "cpu":
        raise ValueError(f"--device applies to the learner role only; role {cfg.role!r} runs on cpu, got {cfg.device!r}")
    secret = None if cfg.role == "local" else load_secret(secret_file=cfg.secret_file or None)
    # the learner binds before anything else is built: a refused address or a taken port fails at once
    link = None
    if cfg.role == "learner":
        link = LearnerLink(cfg.host, cfg.port, secret=secret, weights_dtype=weights_dtype_named(cfg.weights_dtype))
    seed_everything(cfg.seed)
    probe = make_sim_env(cfg.env, cfg.seed)
    obs_dim, action_dim = probe.observation_spec["observation"].shape[-1], probe.action_spec.shape[-1]
    probe.close()
    agent = make_sac_agent(cfg.sac, obs_dim, action_dim, device=cfg.device)
    if cfg.role == "actor":
        run_actor(cfg, agent, secret)
        return
    optimizers = make_sac_optimizers(agent.loss, cfg.sac, capturable=cfg.cudagraphs)
    updater = SACUpdater(agent.loss, optimizers, agent.target_updater, cfg.sac.utd_ratio,
                         compile=cfg.compile, cudagraphs=cfg.cudagraphs, bf16=cfg.bf16,
                         idle_optimizer_steps=cfg.sac.idle_optimizer_steps,
                         actor_on_whole_sample=cfg.sac.actor_on_whole_sample)
    logger = RunLogger(
        cfg.logdir, cfg.exp_name or f"async_sac_{cfg.role}_seed{cfg.seed}", config=config_to_dict(cfg),
        total_steps=cfg.total_steps, use_wandb=cfg.wandb, wandb_mode=cfg.wandb_mode,
        wandb_project=cfg.wandb_project, progress=cfg.progress,
    )
    try:
        if cfg.role == "local":
            run_local(cfg, agent, updater, logger)
        else:
            run_learner(cfg, agent, updater, optimizers, logger, link)
    finally:
        if link is not None:
            link.close()
        logger.close()


if __name__ == "__main__":
    main()
