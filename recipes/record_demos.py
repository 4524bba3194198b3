"""Record demonstrations to a TED demo directory (``torchrl_serl.data.save_demos``).

``--source scripted`` (default) rolls the scripted pick policy in the simulation and keeps the
successful episodes. ``--source spacemouse`` / ``keyboard`` lets a human drive the arm (the
policy outputs zeros; every executed action comes from the device and is flagged
``intervention``), on the simulation or, with ``--robot.real true --robot.address ...``, on the
real arm. Keyboard: w/s a/d r/f move x/y/z, space toggles the gripper (see
``torchrl_serl.envs.input_devices.keyboard``).

    python recipes/record_demos.py --out demos/panda_state --episodes 20
    python recipes/record_demos.py --out demos/panda_pixels --env.pixels true
    python recipes/record_demos.py --out demos/piper_real --env.task piper --env.pixels true \\
        --robot.real true --robot.address can0 --source spacemouse
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from tensordict import TensorDictBase
from torchrl.envs import TransformedEnv

from torchrl_serl.data.demos import record_demos, save_demos
from torchrl_serl.training.config import EnvConfig, RobotConfig, parse_config
from torchrl_serl.training.env_factory import make_env, make_intervention_source
from torchrl_serl.training.seeding import seed_everything

_SOURCES = ("scripted", "spacemouse", "keyboard")


@dataclass
class Config:
    out: str = "demos/panda_pick_cube"
    """Demo directory to write."""
    episodes: int = 20
    """Successful episodes to keep."""
    source: str = "scripted"
    """``scripted`` (simulation only), ``spacemouse`` or ``keyboard``."""
    noise_std: float = 0.1
    """Gaussian noise on the scripted moves (diverse demos)."""
    keep_failures: bool = False
    """Keep every episode, not only successful ones (teleoperation on a real arm without a success signal)."""
    seed: int = 0
    overwrite: bool = False
    env: EnvConfig = field(default_factory=EnvConfig)
    robot: RobotConfig = field(default_factory=RobotConfig)


class _ZeroPolicy:
    """The human drives: the policy proposes no motion, the intervention transform replaces it."""

    def __init__(self, action_dim: int):
        self.action_dim = action_dim

    def __call__(self, td: TensorDictBase) -> TensorDictBase:
        return td.set("action", torch.zeros(*td.batch_size, self.action_dim))


def main(argv=None) -> None:
    cfg = parse_config(Config, argv, description=__doc__)
    if cfg.source not in _SOURCES:
        raise ValueError(f"--source must be one of {_SOURCES}, got {cfg.source!r}")
    if cfg.source == "scripted" and cfg.robot.real:
        raise ValueError("--source scripted needs the simulator (it reads the cube pose); use spacemouse or keyboard")
    seed_everything(cfg.seed)
    env = make_env(cfg.env, cfg.robot, seed=cfg.seed)
    with ExitStack() as stack:
        stack.callback(env.close)
        if cfg.source == "scripted":
            from torchrl_serl.envs.sim.scripted import ScriptedPickPolicy

            generator = torch.Generator().manual_seed(cfg.seed)
            policy = ScriptedPickPolicy(env, action_scale_m=cfg.env.action_scale_m, noise_std=cfg.noise_std,
                                        generator=generator)
        else:
            from torchrl_serl.envs.transforms.intervention import Intervention

            env = TransformedEnv(env, Intervention(make_intervention_source(cfg.source, stack)))
            policy = _ZeroPolicy(env.action_spec.shape[-1])
        data = record_demos(
            env, policy, cfg.episodes, max_steps=cfg.env.max_episode_steps,
            success_key=None if cfg.keep_failures else ("next", "success"),
        )
    cameras = [k for k in ("front", "wrist") if k in data.keys()]
    path = save_demos(
        cfg.out, data, env_name=f"{cfg.env.task}_pick_cube{'_real' if cfg.robot.real else ''}",
        cameras=cameras, action_scale_m=cfg.env.action_scale_m, fps=cfg.env.control_hz, overwrite=cfg.overwrite,
        source=cfg.source,
    )
    successes = int(data["next", "success"].any(-1).sum()) if ("next", "success") in data.keys(True) else -1
    print(f"wrote {data.shape[0]} transitions ({int(data['next', 'done'].sum())} episodes, "
          f"{successes} successful steps) to {path}")


if __name__ == "__main__":
    main()
