"""Evaluate a saved checkpoint: success rate, return and length over N deterministic episodes.

Reads the run's ``config.json`` (written by every training recipe), rebuilds its agent (state SAC
from ``sac_state_sim``/``async_sac``, DrQ from ``drq``), restores
the actor/critic/encoder from the checkpoint and acts with the policy's mode on the simulated task,
or on the real arm with ``--robot.real true`` (same options as the training recipes).

    python recipes/eval.py --run runs/drq_panda_seed0 --episodes 20 --video eval.gif
    python recipes/eval.py --run runs/drq_piper_seed0 --robot.real true --robot.address can0 --episodes 5
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from torchrl.envs import TransformedEnv

from torchrl_serl.training.agent_factory import make_drq_agent, make_sac_agent, make_trunk_features
from torchrl_serl.training.checkpoint import CheckpointError, RunCheckpointer
from torchrl_serl.training.config import DrQConfig, EnvConfig, RobotConfig, SACConfig, apply_overrides, parse_config
from torchrl_serl.training.env_factory import make_env
from torchrl_serl.training.evaluation import evaluate
from torchrl_serl.training.seeding import seed_everything

CAMERAS = ("front", "wrist")


@dataclass
class Config:
    run: str = ""
    """Run directory holding ``config.json`` and ``checkpoints/`` (e.g. ``runs/drq_panda_seed0``)."""
    checkpoint: str = ""
    """A checkpoint directory; empty: the run's newest."""
    episodes: int = 20
    video: str = ""
    """Write the first episode there (``.gif``, or ``.mp4`` with imageio-ffmpeg); empty: none."""
    seed: int = 12345
    robot: RobotConfig = field(default_factory=RobotConfig)
    """The arm to evaluate on (default: the simulated twin of the run's task)."""


def load_run_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --run must name a training run directory (it holds config.json)")
    config = json.loads(path.read_text())
    if "drq" not in config and "sac" not in config:
        raise ValueError(f"{path} is not a SAC or DrQ run config (no 'sac' or 'drq' section)")
    return config


def _fields(section: dict) -> dict:
    """A JSON config section as dataclass overrides (JSON lists back to tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}


def main(argv=None) -> None:
    cfg = parse_config(Config, argv, description=__doc__)
    if not cfg.run:
        raise ValueError("--run is required (a training run directory)")
    if cfg.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {cfg.episodes}")
    run_dir = Path(cfg.run)
    config = load_run_config(run_dir)
    seed_everything(cfg.seed)
    env_cfg = apply_overrides(EnvConfig(), _fields(config["env"]))
    env = make_env(env_cfg, cfg.robot, seed=cfg.seed)
    action_dim = env.action_spec.shape[-1]
    obs_dim = env.observation_spec["observation"].shape[-1]
    if "drq" in config:
        learner = apply_overrides(DrQConfig(), _fields(config["drq"]))
        grasp_hidden = tuple(config["grasp_critic_hidden"]) if config.get("grasp_critic") else None
        agent = make_drq_agent(learner, CAMERAS, env_cfg.image_size, obs_dim, action_dim, grasp_critic_hidden=grasp_hidden)
        if learner.feature_views > 0:  # the policy reads view 0 of the cached trunk features
            env = TransformedEnv(env, make_trunk_features(agent, learner, cfg.seed, num_views=1))
    else:
        learner = apply_overrides(SACConfig(), _fields(config["sac"]))
        agent = make_sac_agent(learner, obs_dim, action_dim)
    # a hybrid agent's gripper commands come from its grasp critic
    grasp = {"grasp_loss": agent.grasp.loss} if agent.grasp is not None else {}
    checkpointer = RunCheckpointer(run_dir / "checkpoints", loss=agent.loss, **grasp)
    try:
        if cfg.checkpoint:
            info = checkpointer.load(cfg.checkpoint)
        else:
            info = checkpointer.resume()
            if info is None:
                raise FileNotFoundError(f"no checkpoint under {run_dir / 'checkpoints'}")
    except CheckpointError as err:
        raise CheckpointError(
            f"{err}\n(the checkpoint does not fit the networks that {run_dir / 'config.json'} describes: "
            "was it written by another run or another configuration?)"
        ) from err
    try:
        metrics = evaluate(env, agent.policy, cfg.episodes, video_path=cfg.video or None)
    finally:
        env.close()
    print(f"checkpoint {info.path} (env step {info.step}): " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
