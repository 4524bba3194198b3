"""TorchRL transforms for SERL: augmentation, robot-side wrappers and human intervention.

The intervention devices themselves (keyboard, SpaceMouse) are in :mod:`torchrl_serl.envs.input_devices`.

Observation history and action chunking are TorchRL's own ``CatFrames`` and ``MultiAction``.
"""

from torchrl_serl.envs.transforms.gripper_penalty import GripperPenalty
from torchrl_serl.envs.transforms.intervention import Intervention, InterventionSource
from torchrl_serl.envs.transforms.learned_reward import LearnedReward
from torchrl_serl.envs.transforms.quat_to_euler import QuatToEuler
from torchrl_serl.envs.transforms.random_shift import RandomShift, random_shift
from torchrl_serl.envs.transforms.relative_frame import RelativeFrame

__all__ = [
    "GripperPenalty",
    "Intervention",
    "InterventionSource",
    "LearnedReward",
    "QuatToEuler",
    "RandomShift",
    "RelativeFrame",
    "random_shift",
]
