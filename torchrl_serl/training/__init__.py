"""What the recipes share: configs, env and agent factories, the learner update, checkpoints, logging, evaluation, plots."""

from torchrl_serl.training.checkpoint import CheckpointError, GracefulStop, ResumeInfo, RunCheckpointer
from torchrl_serl.training.config import EnvConfig, RobotConfig, RunConfig, SACConfig, parse_config
from torchrl_serl.training.logging import RunLogger

__all__ = [
    "CheckpointError",
    "EnvConfig",
    "GracefulStop",
    "ResumeInfo",
    "RobotConfig",
    "RunCheckpointer",
    "RunConfig",
    "RunLogger",
    "SACConfig",
    "parse_config",
]
