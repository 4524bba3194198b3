"""TorchRL transforms for SERL: augmentation, robot-side wrappers and human intervention.

Observation history and action chunking are TorchRL's own ``CatFrames`` and ``MultiAction``.
"""

from torchrl_serl.envs.transforms.gripper_penalty import GripperPenalty
from torchrl_serl.envs.transforms.quat_to_euler import QuatToEuler
from torchrl_serl.envs.transforms.random_shift import RandomShift, random_shift
from torchrl_serl.envs.transforms.relative_frame import RelativeFrame

__all__ = ["GripperPenalty", "QuatToEuler", "RandomShift", "RelativeFrame", "random_shift"]
