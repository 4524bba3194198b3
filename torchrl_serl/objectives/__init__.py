"""SERL's objectives as TorchRL LossModules."""

from torchrl_serl.objectives.bc import SERLBCLoss
from torchrl_serl.objectives.drq import DrQLoss
from torchrl_serl.objectives.grasp_critic import GraspCriticLoss
from torchrl_serl.objectives.sac import SERLSACLoss
from torchrl_serl.objectives.vice import BinaryClassifierLoss, VICELoss, label_batch

__all__ = [
    "BinaryClassifierLoss",
    "DrQLoss",
    "GraspCriticLoss",
    "SERLBCLoss",
    "SERLSACLoss",
    "VICELoss",
    "label_batch",
]
