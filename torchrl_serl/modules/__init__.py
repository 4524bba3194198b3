"""Networks: layer-norm MLPs, the vectorised critic ensemble, the tanh-Gaussian actor."""

from torchrl_serl.modules.actors import TanhGaussianActorNet
from torchrl_serl.modules.critics import EnsembleQValue
from torchrl_serl.modules.mlp import LayerNormMLP
from torchrl_serl.modules.sac_networks import make_grasp_critic, make_sac_actor, make_sac_critic

__all__ = [
    "EnsembleQValue",
    "LayerNormMLP",
    "TanhGaussianActorNet",
    "make_grasp_critic",
    "make_sac_actor",
    "make_sac_critic",
]
