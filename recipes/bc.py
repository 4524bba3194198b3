"""Behaviour cloning from demo files, evaluated in the simulation (SERL's ``BCAgent``).

Trains SERL's tanh-Gaussian policy to maximise the likelihood of the demo actions (``--mode
mse`` regresses the mode instead). State demos train the MLP policy; pixel demos
(``--env.pixels true``) train a multi-camera encoder + policy end to end.

    python recipes/record_demos.py --out demos/panda_state --episodes 20
    python recipes/bc.py --demos demos/panda_state --total_steps 20000
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from torchrl_serl.data.demos import load_demos
from torchrl_serl.data.replay_factory import transitions
from torchrl_serl.objectives.bc import SERLBCLoss
from torchrl_serl.training.checkpoint import GracefulStop, RunCheckpointer
from torchrl_serl.training.config import EnvConfig, RunConfig, config_to_dict, parse_config
from torchrl_serl.training.env_factory import make_sim_env
from torchrl_serl.training.evaluation import evaluate
from torchrl_serl.training.logging import RunLogger
from torchrl_serl.training.run_counters import RunCounters
from torchrl_serl.training.seeding import seed_everything

CAMERAS = ("front", "wrist")


@dataclass
class Config(RunConfig):
    demos: str = "demos/panda_pick_cube"
    """Demo directory written by ``record_demos.py``."""
    total_steps: int = 20_000
    """Gradient steps (BC collects nothing: ``random_steps``, ``training_starts`` and ``buffer_size`` are unused)."""
    batch_size: int = 256
    lr: float = 3e-4
    mode: str = "log_prob"
    """``log_prob`` (SERL) or ``mse``."""
    hidden: tuple[int, ...] = (256, 256)
    encoder: str = "resnet10"
    """Pixel demos only: ``resnet10``, ``small`` or ``mobilenet``."""
    pretrained_path: str = ""
    trust_pickle: bool = False
    """Allow ``pretrained_path`` to be SERL's ``.pkl`` (unpickling runs any code the file holds)."""
    log_every: int = 500
    eval_every: int = 5_000
    checkpoint_every: int = 5_000
    env: EnvConfig = field(default_factory=EnvConfig)


def make_bc_policy(cfg: Config, proprio_dim: int, action_dim: int):
    """State: SERL's MLP policy. Pixels: encoder + policy, the encoder trained by the BC loss."""
    from torchrl_serl.modules.sac_networks import make_sac_actor

    if not cfg.env.pixels:
        return make_sac_actor(proprio_dim, action_dim, hidden=cfg.hidden)
    from torchrl_serl.modules.pixel_encoder import make_pixel_encoder

    encoder = make_pixel_encoder(
        CAMERAS, cfg.env.image_size, encoder=cfg.encoder, pretrained_path=cfg.pretrained_path or None,
        trust_pickle=cfg.trust_pickle, proprio_dim=proprio_dim,
    )
    return make_sac_actor(encoder.out_features, action_dim, hidden=cfg.hidden, encoder=encoder, stop_encoder_grad=False)


def main(argv=None) -> None:
    cfg = parse_config(Config, argv, description=__doc__)
    if cfg.cudagraphs:
        raise ValueError("bc.py does not record CUDA graphs: drop --cudagraphs")
    exp_name = cfg.exp_name or f"bc_seed{cfg.seed}"
    seed_everything(cfg.seed)

    eval_env = make_sim_env(cfg.env, seed=cfg.seed + 1_000_000, device=cfg.device)
    demos, meta = load_demos(cfg.demos)
    demos = transitions(demos)
    demo_buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(demos.shape[0], device=cfg.device),
                                         batch_size=cfg.batch_size)
    demo_buffer.extend(demos)
    policy = make_bc_policy(cfg, demos["observation"].shape[-1], demos["action"].shape[-1]).to(cfg.device)
    loss = SERLBCLoss(policy, mode=cfg.mode)
    optimizer = torch.optim.Adam(loss.parameters(), lr=cfg.lr)
    loss_fn = torch.compile(loss) if cfg.compile else loss
    device_type = torch.device(cfg.device).type
    autocast = (lambda: torch.autocast(device_type, dtype=torch.bfloat16)) if cfg.bf16 else contextlib.nullcontext

    logger = RunLogger(
        cfg.logdir, exp_name, config={**config_to_dict(cfg), "demo_metadata": meta}, total_steps=cfg.total_steps,
        use_wandb=cfg.wandb, wandb_mode=cfg.wandb_mode, wandb_project=cfg.wandb_project, progress=cfg.progress,
    )
    checkpointer = RunCheckpointer(logger.run_dir / "checkpoints", keep_last=cfg.keep_checkpoints,
                                   loss=loss, optimizer=optimizer, logger=logger)
    run = RunCounters()
    if cfg.resume and run.resume(checkpointer, logger):
        print(f"resumed {run}", flush=True)

    with GracefulStop() as stop:
        try:
            while run.step < cfg.total_steps:
                with autocast():
                    out = loss_fn(demo_buffer.sample())
                optimizer.zero_grad(set_to_none=True)
                out["loss_bc"].backward()
                optimizer.step()
                run.updates += 1
                run.advance(1)

                if run.due(cfg.log_every):
                    logger.log({f"train/{k}": float(v.detach()) for k, v in out.items()}, run.step)
                    logger.progress(run.step, loss=float(out["loss_bc"].detach()))
                if run.due(cfg.eval_every):
                    video = logger.run_dir / "videos" / f"eval_{run.step}.gif" if cfg.video else None
                    metrics = evaluate(eval_env, policy, cfg.eval_episodes, video_path=video)
                    logger.log(metrics, run.step)
                    logger.progress(run.step, eval_success=metrics["eval/success_rate"])
                if run.due(cfg.checkpoint_every):
                    run.save(checkpointer)
                if stop.requested:  # Ctrl-C / SIGTERM: finish this step, save, exit
                    break
        finally:
            run.save(checkpointer)
            eval_env.close()
            logger.close()


if __name__ == "__main__":
    main()
