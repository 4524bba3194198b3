"""Penalise gripper toggles (SERL's GripperPenaltyWrapper, HIL-SERL's grasp penalty): discourages
chattering open/close commands."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import Composite, Unbounded
from torchrl.envs.transforms import Transform

_JUDGES = ("state", "command")


class GripperPenalty(Transform):
    """Charge ``penalty`` on every step that toggles the gripper.

    The gripper state is read from the observation (``gripper_key[..., index]``, 0 open, 1 closed, as
    the conventions say); it is closed above ``threshold``. What counts as a toggle (``judge``):

    - ``"state"`` (SERL's ``GripperPenaltyWrapper``): the observed state crosses ``threshold``
      between ``t`` and ``t + 1``. Independent of the action semantics.
    - ``"command"`` (HIL-SERL's grasp penalty): the step's gripper command (the last entry of
      ``action_key``) would change the state observed at ``t``: above ``0.5`` while open (close), or
      below ``-0.5`` while closed (open). The penalty lands on the transition whose action asked for
      the toggle, even where a real gripper takes several steps to move, which is what a critic of
      the gripper command (:class:`~torchrl_serl.objectives.GraspCriticLoss`) needs.

    The step's penalty (``penalty`` or 0, ``[*B, 1]``) is written to ``penalty_key`` and, with
    ``apply_to_reward``, subtracted from the reward. HIL-SERL keeps the reward as it is and only its
    grasp critic sees the penalty: ``apply_to_reward=False``.

    Works on an env (``TransformedEnv``) and, through :meth:`forward`, on a TED batch (root and
    ``("next", ...)`` observations, root action), e.g. a replay-buffer sample whose demos were
    recorded without it.

    Args:
        penalty: charged per toggle, ``>= 0`` (SERL: 0.1; HIL-SERL: 0.02).
        gripper_key: observation holding the gripper opening (default ``"observation"``).
        index: position of the gripper in the last dim of ``gripper_key`` (pixel tasks and real arms:
            6 or -1, the last entry; state tasks: 3).
        threshold: open/closed boundary in ``[0, 1]``.
        reward_key: the reward ``[*B, 1]``.
        penalty_key: where the step's penalty is written, under ``"next"``.
        judge: ``"state"`` or ``"command"`` (see above).
        action_key: the action, gripper command last (``judge="command"``).
        apply_to_reward: subtract the penalty from the reward.
    """

    def __init__(
        self,
        penalty: float = 0.1,
        gripper_key: NestedKey = "observation",
        index: int = 6,
        threshold: float = 0.5,
        reward_key: NestedKey = "reward",
        penalty_key: NestedKey = "gripper_penalty",
        judge: str = "state",
        action_key: NestedKey = "action",
        apply_to_reward: bool = True,
    ):
        if penalty < 0:
            raise ValueError(f"penalty must be >= 0, got {penalty}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if judge not in _JUDGES:
            raise ValueError(f"judge must be one of {_JUDGES}, got {judge!r}")
        in_keys = [gripper_key, reward_key] + ([action_key] if judge == "command" else [])
        super().__init__(in_keys=in_keys, out_keys=[reward_key, penalty_key])
        self.penalty, self.gripper_key, self.index, self.threshold = penalty, gripper_key, index, threshold
        self.reward_key, self.penalty_key, self.action_key = reward_key, penalty_key, action_key
        self.judge, self.apply_to_reward = judge, apply_to_reward

    def _closed(self, td: TensorDictBase) -> torch.Tensor:
        return td.get(self.gripper_key)[..., self.index].unsqueeze(-1) > self.threshold

    def _penalise(self, before: TensorDictBase, after: TensorDictBase) -> TensorDictBase:
        closed = self._closed(before)
        if self.judge == "state":
            toggled = closed != self._closed(after)
        else:
            command = before.get(self.action_key)[..., -1:]
            toggled = ((command > 0.5) & ~closed) | ((command < -0.5) & closed)
        reward = after.get(self.reward_key)
        penalty = (toggled.to(reward.dtype) * self.penalty).reshape(reward.shape)
        if self.apply_to_reward:
            after.set(self.reward_key, reward - penalty)
        after.set(self.penalty_key, penalty)
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
