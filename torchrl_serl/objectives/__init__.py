"""SERL's objectives as TorchRL LossModules."""

from torchrl_serl.objectives.bc import SERLBCLoss
from torchrl_serl.objectives.sac import SERLSACLoss

__all__ = ["SERLBCLoss", "SERLSACLoss"]
