"""Pretrain a ResNet-10 trunk on simulated camera frames, for DrQ with a frozen trunk.

SERL freezes an ImageNet-pretrained ResNet-10, which cannot be downloaded here; a frozen random
trunk learns the pick task slowly (docs/results.md). This renders the task's two cameras along
noisy scripted pick episodes and trains the trunk to regress the simulator's state (cube and TCP
position, gripper) from the images (:mod:`torchrl_serl.training.trunk_pretraining`). The RL learner
never sees that state. ``drq.py``'s CPU preset does this by itself once (``--drq.pretrained_path auto``).

    python recipes/pretrain_trunk.py --out trunks/panda_resnet10.pt
    python recipes/drq.py --drq.pretrained_path trunks/panda_resnet10.pt --drq.feature_views 2 ...

Writes the trunk ``state_dict`` (load with ``--drq.pretrained_path``) and prints the held-out
cube-position error in cm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from torchrl_serl.training.config import EnvConfig, parse_config
from torchrl_serl.training.env_factory import make_sim_env
from torchrl_serl.training.seeding import seed_everything
from torchrl_serl.training.trunk_pretraining import pretrain_trunk


@dataclass
class Config:
    out: str = "trunks/panda_resnet10.pt"
    """Where to write the trunk state_dict (``--drq.pretrained_path``)."""
    frames: int = 3000
    """Frames to render for training (one tenth more are rendered and held out)."""
    iterations: int = 150
    batch_size: int = 32
    lr: float = 3e-4
    pad: int = 4
    """Random-shift augmentation in px (DrQ's)."""
    max_noise: float = 0.6
    """Each episode's scripted-policy noise std is drawn in [0, max_noise] (diverse states)."""
    threads: int = 0
    """torch threads (0: torch's default)."""
    seed: int = 0
    env: EnvConfig = field(default_factory=lambda: EnvConfig(pixels=True))


def main(argv=None) -> None:
    cfg = parse_config(Config, argv, description=__doc__)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    env = make_sim_env(cfg.env, seed=cfg.seed)
    try:
        result = pretrain_trunk(env, cfg.frames, cfg.iterations, cfg.batch_size, cfg.lr, cfg.pad, cfg.max_noise,
                                cfg.seed, log=lambda msg: print(msg, flush=True))
    finally:
        env.close()
    print(f"held-out mean error: cube {result.cube_error_cm:.2f} cm, tcp {result.tcp_error_cm:.2f} cm")
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result.state_dict, out)
    print(f"wrote {out} ({result.seconds:.0f} s)")


if __name__ == "__main__":
    main()
