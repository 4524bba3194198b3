"""DrQ from pixels on the simulated PandaPickCube (SERL's ``async_drq_sim``, synchronous).

Two 128x128 cameras (``front``, ``wrist``) + the 7-D state go through a frozen ResNet-10 (pass
SERL's pretrained weights with ``--drq.pretrained_path``; nothing is downloaded) shared by actor
and critic; images are randomly shifted inside the loss. Each env step is followed by
``drq.utd_ratio - 1`` critic updates and one full update (SERL's ratio 4). With ``--demos <dir>``
every batch is half demos (RLPD). ``drq_piper.py`` and ``drq_franka.py`` run this loop on those
arms (``--robot.real true`` for the hardware, with ``--intervention spacemouse`` for HIL).

    python recipes/drq_sim.py --demos demos/panda_pixels
    python recipes/drq_sim.py --env.image_size 64 --drq.encoder small   # cheaper on a CPU
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field

from torchrl.envs import TransformedEnv

from torchrl_serl.data.intervention_router import InterventionRouter
from torchrl_serl.envs.transforms.intervention import Intervention
from torchrl_serl.training.builders import (
    SACUpdater,
    make_collector,
    make_demo_replay_buffer,
    make_drq_agent,
    make_env,
    make_intervention_source,
    make_pixel_replay_buffer,
    make_sac_optimizers,
    online_size,
    parameters_checksum,
    seed_everything,
    transitions,
)
from torchrl_serl.training.checkpoint import GracefulStop, RunCheckpointer
from torchrl_serl.training.config import DrQConfig, EnvConfig, RobotConfig, RunConfig, config_to_dict, parse_config
from torchrl_serl.training.evaluation import evaluate
from torchrl_serl.training.logging import EpisodeTracker, RunLogger

CAMERAS = ("front", "wrist")
_INTERVENTIONS = ("none", "spacemouse", "keyboard")


@dataclass
class Config(RunConfig):
    buffer_size: int = 200_000
    env: EnvConfig = field(default_factory=lambda: EnvConfig(pixels=True))
    drq: DrQConfig = field(default_factory=DrQConfig)
    robot: RobotConfig = field(default_factory=RobotConfig)
    demos: str = ""
    """Demo directory (``record_demos.py --env.pixels true``); empty: no demos."""
    demo_fraction: float = 0.5
    intervention: str = "none"
    """Human intervention device while training (``none``, ``spacemouse``, ``keyboard``); needs ``--demos``:
    intervened steps are added to the demo side."""


def main(argv=None, config_cls: type[Config] = Config, recipe: str = "drq_sim", description: str = __doc__) -> None:
    cfg = parse_config(config_cls, argv, description=description)
    if cfg.intervention not in _INTERVENTIONS:
        raise ValueError(f"--intervention must be one of {_INTERVENTIONS}, got {cfg.intervention!r}")
    if cfg.intervention != "none" and not cfg.demos:
        raise ValueError("--intervention needs --demos: intervened steps are stored on the demo side")
    if not cfg.env.pixels:
        raise ValueError("DrQ learns from pixels: --env.pixels must be true")
    exp_name = cfg.exp_name or f"{recipe}_seed{cfg.seed}"
    seed_everything(cfg.seed)

    with ExitStack() as stack:
        # env (real arm or simulation), agent, buffer, collector
        env = make_env(cfg.env, cfg.robot, seed=cfg.seed, device=cfg.device)
        if cfg.intervention != "none":
            env = TransformedEnv(env, Intervention(make_intervention_source(cfg.intervention, stack)))
        # a real arm is evaluated by the operator's episodes, not by a second robot
        eval_env = None if cfg.robot.real else make_env(cfg.env, None, seed=cfg.seed + 1_000_000, device=cfg.device)
        proprio_dim = env.observation_spec["observation"].shape[-1]
        action_dim = env.action_spec.shape[-1]
        agent = make_drq_agent(cfg.drq, CAMERAS, cfg.env.image_size, proprio_dim, action_dim, device=cfg.device)
        optimizers = make_sac_optimizers(agent.loss, cfg.drq, capturable=cfg.cudagraphs)
        updater = SACUpdater(agent.loss, optimizers, agent.target_updater, cfg.drq.utd_ratio,
                             compile=cfg.compile, cudagraphs=cfg.cudagraphs, bf16=cfg.bf16)
        logger = RunLogger(
            cfg.logdir, exp_name, config=config_to_dict(cfg), total_steps=cfg.total_steps,
            use_wandb=cfg.wandb, wandb_mode=cfg.wandb_mode, wandb_project=cfg.wandb_project, progress=cfg.progress,
        )
        if cfg.demos:
            buffer = make_demo_replay_buffer(
                cfg.buffer_size, cfg.drq.batch_size, cfg.demos, scratch_dir=logger.run_dir / "replay",
                demo_fraction=cfg.demo_fraction, pixel_keys=CAMERAS, seed=cfg.seed,
            )
        else:
            buffer = make_pixel_replay_buffer(
                cfg.buffer_size, cfg.drq.batch_size, logger.run_dir / "replay", pixel_keys=CAMERAS, seed=cfg.seed
            )
        # intervened steps also go to the demo side (SERL/HIL-SERL)
        router = InterventionRouter(buffer) if cfg.intervention != "none" else None
        collector = make_collector(env, agent.policy, frames_per_batch=1, random_steps=cfg.random_steps)
        checkpointer = RunCheckpointer(
            logger.run_dir / "checkpoints", keep_last=cfg.keep_checkpoints,
            loss=agent.loss, buffer=buffer, collector=collector, logger=logger, **optimizers,
        )
        step = updates = episodes = interventions = 0
        if cfg.resume and (info := checkpointer.resume()) is not None:
            step, updates = info.step, info.counters["updates"]
            episodes, interventions = info.counters["episodes"], info.counters["interventions"]
            logger.truncate_after(step)
            env.set_seed(cfg.seed + step)
            collector.reset()
            print(f"resumed step={step} buffer={online_size(buffer)} updates={updates} "
                  f"actor_checksum={parameters_checksum(agent.actor.parameters())!r}", flush=True)
        tracker = EpisodeTracker()
        train_metrics: dict[str, float] = {}

        def save() -> None:
            checkpointer.save(step, updates=updates, episodes=episodes, interventions=interventions)

        with GracefulStop() as stop:
            try:
                for batch in collector:
                    if step >= cfg.total_steps:
                        break
                    if router is not None:
                        interventions += router.extend(transitions(batch))
                    else:
                        buffer.extend(transitions(batch))
                    step += batch.numel()
                    for episode in tracker.update(batch):
                        episodes += 1
                        logger.log({"train/episode_return": episode["return"], "train/success": episode["success"],
                                    "train/episode_length": episode["length"]}, step)
                        logger.progress(step, success=episode["success"], ret=episode["return"])

                    if step >= cfg.training_starts:
                        train_metrics = updater.update(buffer.sample)
                        updates += 1
                        collector.update_policy_weights_()

                    if step % cfg.log_every == 0:
                        logger.log({**train_metrics, "train/updates": updates, "train/interventions": interventions,
                                    "train/buffer_size": online_size(buffer)}, step)
                        logger.progress(step)
                    if eval_env is not None and cfg.eval_every > 0 and step % cfg.eval_every == 0:
                        video = logger.run_dir / "videos" / f"eval_{step}.gif" if cfg.video else None
                        metrics = evaluate(eval_env, agent.policy, cfg.eval_episodes, video_path=video)
                        logger.log(metrics, step)
                        logger.progress(step, eval_success=metrics["eval/success_rate"])
                    if step % cfg.checkpoint_every == 0:
                        save()
                    if stop.requested:  # Ctrl-C / SIGTERM: finish this step, save, exit
                        break
            finally:
                save()
                collector.shutdown()
                if eval_env is not None:
                    eval_env.close()
                logger.close()


if __name__ == "__main__":
    main()
