"""SERL's objectives as TorchRL LossModules."""

from torchrl_serl.objectives.bc import SERLBCLoss
from torchrl_serl.objectives.grasp_critic import GraspCriticLoss, grasp_penalty
from torchrl_serl.objectives.sac import SERLSACLoss

__all__ = ["GraspCriticLoss", "SERLBCLoss", "SERLSACLoss", "grasp_penalty"]
