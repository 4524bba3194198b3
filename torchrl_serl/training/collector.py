"""The recipes' TorchRL collector."""

from __future__ import annotations

from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import EnvBase


def make_collector(
    env: EnvBase,
    policy: nn.Module,
    frames_per_batch: int = 1,
    random_steps: int = 0,
) -> Collector:
    """An endless TorchRL :class:`Collector`: uniform-random actions for ``random_steps``, then
    the (stochastic) policy. The recipe decides when to stop."""
    return Collector(
        env,
        policy,
        frames_per_batch=frames_per_batch,
        total_frames=-1,
        init_random_frames=random_steps,
        auto_register_policy_transforms=False,
    )
