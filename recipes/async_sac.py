"""Asynchronous SAC on the simulated PandaPickCube from state (SERL's ``async_sac_state_sim``).

The actor acts continuously; the learner updates as fast as it can (SERL's critic:actor ratio
``utd_ratio``) and pushes fresh weights every ``push_every`` learner steps. Three roles:

- ``local`` (default): actor in a child process on this machine (TorchRL ``MultiAsyncCollector``
  running free into a shared buffer, weights through a ``MultiProcessWeightSyncScheme``).
- ``learner`` / ``actor``: the two halves on different machines (GPU box / robot PC), linked by
  ZeroMQ on the learner's ``--port``, authenticated and encrypted (CURVE) by one shared secret
  (``--secret_file`` or ``$TORCHRL_SERL_SECRET``; without one, loopback only). The actor survives
  learner restarts (it keeps acting with its last weights and reconnects); the learner survives
  actor crashes and checkpoints its state (``--resume`` continues after a restart).

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

import torch
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from torchrl_serl.data.replay_factory import make_replay_buffer, transitions
from torchrl_serl.training.actor_learner import POLICY_VERSION_KEY, ActorLearner
from torchrl_serl.training.agent_factory import make_sac_agent
from torchrl_serl.training.checkpoint import GracefulStop, RunCheckpointer, terminate_as_interrupt
from torchrl_serl.training.config import EnvConfig, RunConfig, SACConfig, config_to_dict, parse_config
from torchrl_serl.training.distributed import LearnerLink, RemoteActor
from torchrl_serl.training.env_factory import make_sim_env
from torchrl_serl.training.logging import EpisodeTracker, RunLogger
from torchrl_serl.security import load_secret
from torchrl_serl.training.seeding import seed_everything
from torchrl_serl.training.updater import SACUpdater, make_sac_optimizers

ROLES = ("local", "learner", "actor")


@dataclass
class Config(RunConfig):
    env: EnvConfig = field(default_factory=EnvConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    role: str = "local"
    """``local`` (actor process + learner here), ``learner`` (GPU box) or ``actor`` (robot PC)."""
    host: str = "127.0.0.1"
    """Learner address: where the actor connects; where the learner listens (``0.0.0.0``: all)."""
    port: int = 29550
    secret_file: str = ""
    """File holding the link's shared secret (``python -m torchrl_serl.security`` makes one); empty:
    ``$TORCHRL_SERL_SECRET``; neither: ``--host`` must be loopback."""
    timeout_s: float = 10.0
    """Deadline of every call the actor makes across the link."""
    frames_per_batch: int = 10
    """Env steps the actor sends (or writes) at once."""
    push_every: int = 1
    """Learner steps between weight pushes (bounds the actor's staleness)."""


def learner_step_and_push(cfg, updater, buffer, push, updates, metrics):
    """One SERL learner step once the buffer is warm; pushes weights every ``push_every`` steps."""
    if len(buffer) < max(cfg.training_starts, cfg.sac.batch_size):
        time.sleep(0.01)
        return updates, metrics
    metrics = updater.update(buffer.sample(cfg.sac.batch_size * cfg.sac.utd_ratio))
    updates += 1
    if updates % cfg.push_every == 0:
        push(updates)
    return updates, metrics


def run_local(cfg: Config, agent, updater, logger: RunLogger) -> None:
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(cfg.buffer_size), batch_size=cfg.sac.batch_size, shared=True
    )
    env_fn = partial(make_sim_env, cfg.env, cfg.seed)
    tracker, metrics, updates, seen = EpisodeTracker(), {}, 0, 0
    with ActorLearner(env_fn, agent.actor, buffer, frames_per_batch=cfg.frames_per_batch,
                      init_random_frames=cfg.random_steps, seed=cfg.seed) as al:
        al.start()
        while al.frames < cfg.total_steps:
            updates, metrics = learner_step_and_push(
                cfg, updater, buffer, lambda u: al.push_weights(learner_step=u), updates, metrics
            )
            frames = al.frames
            if frames > seen:
                # the actor wrote [seen, frames) since the last look: track its episodes
                new = buffer.storage[torch.arange(seen, frames) % cfg.buffer_size]
                for episode in tracker.update(new):
                    logger.log({"train/episode_return": episode["return"], "train/success": episode["success"]}, frames)
                    logger.progress(frames, success=episode["success"], ret=episode["return"])
                if frames // cfg.log_every > seen // cfg.log_every:
                    logger.log({**metrics, "train/updates": updates,
                                "train/actor_policy_lag": al.policy_lag(updates)}, frames)
                seen = frames


def run_learner(cfg: Config, agent, updater, optimizers, logger: RunLogger, link: LearnerLink) -> None:
    buffer = make_replay_buffer(cfg.buffer_size, cfg.sac.batch_size, device=cfg.device)
    checkpointer = RunCheckpointer(logger.run_dir / "checkpoints", keep_last=cfg.keep_checkpoints,
                                   loss=agent.loss, buffer=buffer, logger=logger, **optimizers)
    frames = updates = 0
    if cfg.resume and (info := checkpointer.resume()) is not None:
        frames, updates = info.step, info.counters["updates"]
        print(f"resumed frames={frames} updates={updates}", flush=True)
    link.publish_weights(agent.actor, updates)
    tracker, metrics, last_save = EpisodeTracker(), {}, frames

    def take(batches) -> int:
        """Stores the actors' batches; returns the env steps they hold."""
        steps = 0
        for batch in batches:
            buffer.extend(transitions(batch))
            steps += batch.numel()
            lag = updates - int(batch[POLICY_VERSION_KEY].min())
            for episode in tracker.update(batch):
                logger.log({"train/episode_return": episode["return"], "train/success": episode["success"],
                            "train/actor_policy_lag": lag}, frames + steps)
                logger.progress(frames + steps, success=episode["success"], ret=episode["return"])
        return steps

    with GracefulStop() as stop:
        try:
            while frames < cfg.total_steps and not stop.requested:
                before = frames
                frames += take(link.pull())
                updates, metrics = learner_step_and_push(
                    cfg, updater, buffer, lambda u: link.publish_weights(agent.actor, u), updates, metrics
                )
                if frames - last_save >= cfg.checkpoint_every:
                    checkpointer.save(frames, updates=updates)
                    last_save = frames
                if frames // cfg.log_every > before // cfg.log_every:
                    logger.log({**metrics, "train/updates": updates,
                                "train/actors_alive": link.actors_seen_within(5.0)}, frames)
        finally:
            # stop acknowledging first: every batch the actors saw acknowledged is in the last checkpoint
            link.close()
            frames += take(link.pull(max_batches=10**9))
            checkpointer.save(frames, updates=updates)


def run_actor(cfg: Config, agent, secret: bytes | None) -> None:
    actor = RemoteActor(
        partial(make_sim_env, cfg.env, cfg.seed), agent.actor, host=cfg.host, port=cfg.port, secret=secret,
        frames_per_batch=cfg.frames_per_batch, timeout_s=cfg.timeout_s,
        init_random_frames=cfg.random_steps, seed=cfg.seed,
    )
    with terminate_as_interrupt():
        try:
            stats = actor.run(
                total_frames=cfg.total_steps,
                on_batch=lambda s: print(s, flush=True) if s["frames"] % 1000 < cfg.frames_per_batch else None,
            )
        except KeyboardInterrupt:
            stats = actor.stats
    print(f"actor done: {stats}", flush=True)


def main(argv=None) -> None:
    cfg = parse_config(Config, argv, description=__doc__)
    if cfg.role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {cfg.role!r}")
    if cfg.push_every < 1:
        raise ValueError(f"push_every must be >= 1, got {cfg.push_every}")
    if cfg.role != "learner" and cfg.device != "cpu":
        raise ValueError(f"--device applies to the learner role only; role {cfg.role!r} runs on cpu, got {cfg.device!r}")
    secret = None if cfg.role == "local" else load_secret(secret_file=cfg.secret_file or None)
    # the learner binds before anything else is built: a refused address or a taken port fails at once
    link = LearnerLink(cfg.host, cfg.port, secret=secret) if cfg.role == "learner" else None
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
                         compile=cfg.compile, cudagraphs=cfg.cudagraphs, bf16=cfg.bf16)
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
