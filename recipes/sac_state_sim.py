"""SAC / RLPD on the simulated PandaPickCube from state (SERL's ``async_sac_state_sim``, synchronous).

With ``--demos <dir>`` (from ``recipes/record_demos.py``) every batch is half demos, half online
data (RLPD); without, plain SAC with SERL's ensemble critic.

One env step, then one learner step: ``utd_ratio`` critic updates and one actor + temperature update
on one sample split into ``utd_ratio`` minibatches (SERL's critic:actor ratio 8). Logs to ``<logdir>/<exp_name>/`` (CSV; wandb with ``--wandb``), evaluates
the deterministic policy every ``eval_every`` steps, checkpoints every ``checkpoint_every`` steps
and on Ctrl-C / SIGTERM; ``--resume`` continues the newest valid checkpoint.

    python recipes/sac_state_sim.py --total_steps 30000 --seed 0
    python recipes/record_demos.py --out demos/panda_state --episodes 20
    python recipes/sac_state_sim.py --demos demos/panda_state
    python recipes/sac_state_sim.py --help
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from torchrl_serl.data.replay_factory import make_demo_replay_buffer, make_replay_buffer, online_size, transitions
from torchrl_serl.training.agent_factory import make_sac_agent
from torchrl_serl.training.checkpoint import GracefulStop, RunCheckpointer, parameters_checksum
from torchrl_serl.training.collector import make_collector
from torchrl_serl.training.config import EnvConfig, RunConfig, SACConfig, config_to_dict, parse_config
from torchrl_serl.training.env_factory import make_sim_env
from torchrl_serl.training.evaluation import evaluate
from torchrl_serl.training.logging import EpisodeTracker, RunLogger
from torchrl_serl.training.run_counters import RunCounters
from torchrl_serl.training.seeding import seed_everything
from torchrl_serl.training.updater import SACUpdater, make_sac_optimizers


@dataclass
class Config(RunConfig):
    env: EnvConfig = field(default_factory=EnvConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    demos: str = ""
    """Demo directory (``record_demos.py``); empty: no demos."""
    demo_fraction: float = 0.5
    """Share of each batch drawn from the demos (RLPD: 0.5)."""


def main(argv=None) -> None:
    cfg = parse_config(Config, argv, description=__doc__)
    start_time = time.perf_counter()
    exp_name = cfg.exp_name or f"sac_state_sim_seed{cfg.seed}"
    seed_everything(cfg.seed)

    # env, agent, buffer, collector
    env = make_sim_env(cfg.env, seed=cfg.seed, device=cfg.device)
    eval_env = make_sim_env(cfg.env, seed=cfg.seed + 1_000_000, device=cfg.device)
    obs_dim = env.observation_spec["observation"].shape[-1]
    action_dim = env.action_spec.shape[-1]
    agent = make_sac_agent(cfg.sac, obs_dim, action_dim, device=cfg.device)
    optimizers = make_sac_optimizers(agent.loss, cfg.sac, capturable=cfg.cudagraphs)
    updater = SACUpdater(agent.loss, optimizers, agent.target_updater, cfg.sac.utd_ratio,
                         compile=cfg.compile, cudagraphs=cfg.cudagraphs, bf16=cfg.bf16,
                         idle_optimizer_steps=cfg.sac.idle_optimizer_steps,
                         actor_on_whole_sample=cfg.sac.actor_on_whole_sample)
    learner_batch = cfg.sac.batch_size * cfg.sac.utd_ratio  # one sample per learner step
    logger = RunLogger(
        cfg.logdir, exp_name, config=config_to_dict(cfg), total_steps=cfg.total_steps,
        use_wandb=cfg.wandb, wandb_mode=cfg.wandb_mode, wandb_project=cfg.wandb_project, progress=cfg.progress,
    )
    if cfg.demos:
        buffer = make_demo_replay_buffer(
            cfg.buffer_size, learner_batch, cfg.demos, scratch_dir=logger.run_dir / "replay",
            demo_fraction=cfg.demo_fraction, seed=cfg.seed,
        )
    else:
        buffer = make_replay_buffer(cfg.buffer_size, learner_batch, device=cfg.device)
    collector = make_collector(env, agent.actor, frames_per_batch=1, random_steps=cfg.random_steps)
    checkpointer = RunCheckpointer(
        logger.run_dir / "checkpoints", keep_last=cfg.keep_checkpoints,
        loss=agent.loss, buffer=buffer, collector=collector, logger=logger, **optimizers,
    )
    run = RunCounters()
    if cfg.resume and run.resume(checkpointer, logger):
        # the MuJoCo state of the interrupted episode is not saved: start a new, differently seeded one
        env.set_seed(cfg.seed + run.step)
        collector.reset()
        print(f"resumed {run} buffer={online_size(buffer)} "
              f"actor_checksum={parameters_checksum(agent.actor.parameters())!r}", flush=True)
    minutes_before = logger.last_value("time/minutes") or 0.0  # a resumed run's wall clock goes on from its checkpoint
    tracker = EpisodeTracker()
    train_metrics: dict[str, float] = {}

    with GracefulStop() as stop:
        try:
            for batch in collector:
                if run.step >= cfg.total_steps:
                    break
                buffer.extend(transitions(batch))
                run.advance(batch.numel())
                for episode in tracker.update(batch):
                    run.episodes += 1
                    logger.log({"train/episode_return": episode["return"], "train/success": episode["success"],
                                "train/episode_length": episode["length"]}, run.step)
                    logger.progress(run.step, success=episode["success"], ret=episode["return"])

                if run.step >= cfg.training_starts:
                    train_metrics = updater.update(buffer.sample(learner_batch))
                    run.updates += 1
                    collector.update_policy_weights_()

                minutes = minutes_before + (time.perf_counter() - start_time) / 60
                if run.due(cfg.log_every):
                    logger.log({**train_metrics, "train/updates": run.updates,
                                "train/buffer_size": online_size(buffer), "time/minutes": minutes}, run.step)
                    logger.progress(run.step)
                if run.due(cfg.eval_every):
                    video = logger.run_dir / "videos" / f"eval_{run.step}.gif" if cfg.video else None
                    metrics = evaluate(eval_env, agent.actor, cfg.eval_episodes, video_path=video)
                    logger.log({**metrics, "time/minutes": minutes}, run.step)
                    logger.progress(run.step, eval_success=metrics["eval/success_rate"])
                if run.due(cfg.checkpoint_every):
                    run.save(checkpointer)
                if stop.requested:  # Ctrl-C / SIGTERM: finish this step, save, exit
                    break
        finally:
            run.save(checkpointer)
            collector.shutdown()
            eval_env.close()
            logger.close()


if __name__ == "__main__":
    main()
