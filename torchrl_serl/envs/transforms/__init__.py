"""TorchRL transforms for SERL: augmentation, robot-side wrappers and human intervention.

Observation history and action chunking are TorchRL's own ``CatFrames`` and ``MultiAction``.
"""

from torchrl_serl.envs.transforms.gripper_penalty import GripperPenalty
from torchrl_serl.envs.transforms.intervention import Intervention, InterventionSource
from torchrl_serl.envs.transforms.learned_reward import LearnedReward
from torchrl_serl.envs.transforms.keyboard import DEFAULT_KEY_MAP, KeyboardSource, TerminalKeyReader
from torchrl_serl.envs.transforms.quat_to_euler import QuatToEuler
from torchrl_serl.envs.transforms.random_shift import RandomShift, random_shift
from torchrl_serl.envs.transforms.relative_frame import RelativeFrame
from torchrl_serl.envs.transforms.spacemouse import SpaceMouseSource

__all__ = [
    "DEFAULT_KEY_MAP",
    "GripperPenalty",
    "Intervention",
    "InterventionSource",
    "KeyboardSource",
    "LearnedReward",
    "QuatToEuler",
    "RandomShift",
    "RelativeFrame",
    "SpaceMouseSource",
    "TerminalKeyReader",
    "random_shift",
]
