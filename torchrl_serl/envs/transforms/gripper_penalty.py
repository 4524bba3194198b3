"""Penalise gripper toggles (SERL's GripperPenaltyWrapper): discourages chattering open/close commands."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import Composite, Unbounded
from torchrl.envs.transforms import Transform


class GripperPenalty(Transform):
    """Subtract ``penalty`` from the reward on every step where the gripper changes state.

    The gripper state is read from the observation (``gripper_key[..., index]``, 0 open, 1 closed, as
    the conventions say), before (``t``) and after (``t + 1``) the step; a toggle is a crossing of
    ``threshold``. Judging the observed state rather than the command makes the penalty independent of
    the action semantics (absolute or incremental gripper command). The per-step penalty is also
    written to ``penalty_key`` ``[*B, 1]`` so that losses or logs can see it.

    Args:
        penalty: reward subtracted per toggle, ``>= 0`` (SERL: 0.1).
        gripper_key: observation holding the gripper opening (default ``"observation"``).
        index: position of the gripper in the last dim of ``gripper_key`` (pixel tasks: 6, state tasks: 3).
        threshold: open/closed boundary in ``[0, 1]``.
    """

    def __init__(
        self,
        penalty: float = 0.1,
        gripper_key: NestedKey = "observation",
        index: int = 6,
        threshold: float = 0.5,
        reward_key: NestedKey = "reward",
        penalty_key: NestedKey = "gripper_penalty",
    ):
        if penalty < 0:
            raise ValueError(f"penalty must be >= 0, got {penalty}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        super().__init__(in_keys=[gripper_key, reward_key], out_keys=[reward_key, penalty_key])
        self.penalty, self.gripper_key, self.index, self.threshold = penalty, gripper_key, index, threshold
        self.reward_key, self.penalty_key = reward_key, penalty_key

    def _penalise(self, before: TensorDictBase, after: TensorDictBase) -> TensorDictBase:
        g0 = before.get(self.gripper_key)[..., self.index : self.index + 1]
        g1 = after.get(self.gripper_key)[..., self.index : self.index + 1]
        reward = after.get(self.reward_key)
        penalty = ((g0 > self.threshold) != (g1 > self.threshold)).to(reward.dtype) * self.penalty
        after.set(self.reward_key, reward - penalty.reshape(reward.shape))
        after.set(self.penalty_key, penalty.reshape(reward.shape))
        return after

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        return self._penalise(tensordict, next_tensordict)

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        return next_tensordict

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        return tensordict_reset.set(self.penalty_key, self.parent.full_reward_spec[self.reward_key].zero())

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Penalise a TED batch in place: uses the root and ``("next", ...)`` gripper states."""
        self._penalise(tensordict, tensordict.get("next"))
        return tensordict

    def transform_reward_spec(self, reward_spec: Composite) -> Composite:
        return reward_spec

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        reward_spec = self.parent.full_reward_spec[self.reward_key]
        observation_spec[self.penalty_key] = Unbounded(reward_spec.shape, device=reward_spec.device, dtype=reward_spec.dtype)
        return observation_spec
