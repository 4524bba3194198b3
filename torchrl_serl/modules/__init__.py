"""Networks: layer-norm MLPs, the vectorised critic ensemble, the tanh-Gaussian actor, pixel encoders, classifiers."""

from torchrl_serl.modules.actors import TanhGaussianActorNet
from torchrl_serl.modules.classifier import ClassifierReward, SuccessClassifier, load_pixel_classifier, make_pixel_classifier
from torchrl_serl.modules.critics import EnsembleQValue
from torchrl_serl.modules.drq_networks import make_drq_networks, make_drq_policy
from torchrl_serl.modules.encoders import MultiCameraEncoder
from torchrl_serl.modules.mlp import LayerNormMLP
from torchrl_serl.modules.pixel_encoder import make_pixel_encoder
from torchrl_serl.modules.sac_networks import make_grasp_critic, make_sac_actor, make_sac_critic

__all__ = [
    "ClassifierReward",
    "EnsembleQValue",
    "LayerNormMLP",
    "MultiCameraEncoder",
    "SuccessClassifier",
    "TanhGaussianActorNet",
    "load_pixel_classifier",
    "make_drq_networks",
    "make_drq_policy",
    "make_grasp_critic",
    "make_pixel_classifier",
    "make_pixel_encoder",
    "make_sac_actor",
    "make_sac_critic",
]
