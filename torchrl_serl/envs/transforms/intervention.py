"""Human intervention: a teleoperator (SpaceMouse, keyboard) overrides the policy's action."""

from __future__ import annotations

from typing import Protocol

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import Categorical, Composite
from torchrl.envs.transforms import Transform


class InterventionSource(Protocol):
    """Anything with ``poll() -> Tensor [A] | None`` (None: the human is not intervening)."""

    def poll(self) -> torch.Tensor | None: ...


class Intervention(Transform):
    """Let a human override the policy: the executed action is recorded, flagged and can go to the demos.

    Before each step, ``source.poll()`` is asked for a human action ``[A]``. If it returns one, that
    action is executed instead of the policy's and it is written **in place** into the step's input
    ``action`` tensor, so the TED transition records what the robot actually did (TorchRL transforms
    cannot replace the recorded root action otherwise). Each transition also gets:

    - ``("next", "intervention")`` bool ``[*B, 1]``: the executed action came from the human;
    - ``("next", "policy_action")`` ``[*B, A]``: what the policy proposed (``policy_action_key=None``
      to skip).

    Append it last (after e.g. :class:`RelativeFrame`) so the human acts in the policy's action
    frame. Route flagged transitions to the demo buffer with
    :class:`~torchrl_serl.data.InterventionRouter`.

    Args:
        source: an :class:`InterventionSource` such as
            :class:`~torchrl_serl.envs.input_devices.SpaceMouseSource` or
            :class:`~torchrl_serl.envs.input_devices.KeyboardSource`.
        action_key: the action entry.
        intervention_key: where the flag goes (under ``"next"``).
        policy_action_key: where the policy's proposal goes (under ``"next"``), or None.
    """

    def __init__(
        self,
        source: InterventionSource,
        action_key: NestedKey = "action",
        intervention_key: NestedKey = "intervention",
        policy_action_key: NestedKey | None = "policy_action",
    ):
        super().__init__(in_keys=[], out_keys=[], in_keys_inv=[action_key], out_keys_inv=[action_key])
        self.source = source
        self.action_key, self.intervention_key, self.policy_action_key = action_key, intervention_key, policy_action_key
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def _inv_call(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get(self.action_key)
        proposed = action.clone()
        human = self.source.poll()
        intervening = human is not None
        if intervening:
            human = torch.as_tensor(human, dtype=action.dtype, device=action.device)
            if human.shape[-1] != action.shape[-1] or not torch.isfinite(human).all():
                raise ValueError(f"intervention action must be finite with {action.shape[-1]} entries, got {human}")
            with torch.no_grad():
                action.copy_(human.expand_as(action))
            tensordict.set(self.action_key, action.clone())
        flag = torch.full((*action.shape[:-1], 1), intervening, dtype=torch.bool, device=action.device)
        self._last = (flag, proposed)
        return tensordict

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        flag, proposed = self._last
        next_tensordict.set(self.intervention_key, flag)
        if self.policy_action_key is not None:
            next_tensordict.set(self.policy_action_key, proposed)
        return next_tensordict

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        zero_action = self.parent.full_action_spec[self.action_key].zero()
        flag = torch.zeros((*zero_action.shape[:-1], 1), dtype=torch.bool, device=zero_action.device)
        tensordict_reset.set(self.intervention_key, flag)
        if self.policy_action_key is not None:
            tensordict_reset.set(self.policy_action_key, zero_action)
        return tensordict_reset

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        action_spec = self.parent.full_action_spec[self.action_key]
        batch = action_spec.shape[:-1]
        observation_spec[self.intervention_key] = Categorical(2, (*batch, 1), dtype=torch.bool, device=action_spec.device)
        if self.policy_action_key is not None:
            observation_spec[self.policy_action_key] = action_spec.clone()
        return observation_spec
