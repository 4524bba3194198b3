"""Training utilities shared by the recipes: configs, checkpoints, logging, evaluation, plots."""

from torchrl_serl.training.checkpoint import CheckpointError, ResumeInfo, RunCheckpointer, terminate_as_interrupt
from torchrl_serl.training.config import EnvConfig, RobotConfig, RunConfig, SACConfig, parse_config
from torchrl_serl.training.logging import RunLogger

__all__ = [
    "CheckpointError",
    "EnvConfig",
    "ResumeInfo",
    "RobotConfig",
    "RunCheckpointer",
    "RunConfig",
    "RunLogger",
    "SACConfig",
    "parse_config",
    "terminate_as_interrupt",
]
