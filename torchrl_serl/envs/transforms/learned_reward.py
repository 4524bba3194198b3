"""Reward from a learned success classifier (SERL's reward-classifier wrapper, VICE relabelling)."""

from __future__ import annotations

from typing import Literal

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs.transforms import Transform

from torchrl_serl.modules.classifier import ClassifierReward, RewardMode, SuccessClassifier


class LearnedReward(Transform):
    """Replace (or add to) the reward with a success classifier's output; optionally end on success.

    The classifier judges the observation reached by the step (``("next", ...)``), as SERL does.
    ``success = sigmoid(logit) >= threshold`` is written to ``success_key`` (overwriting an env's own
    flag: pass ``success_key="classifier_success"`` to keep the ground truth of a simulated task).

    Works on an env (``TransformedEnv(env, LearnedReward(clf))``) and on replay-buffer samples
    (``rb.append_transform(LearnedReward(clf))`` or ``transform(batch)``), where it relabels
    ``("next", reward)`` (and ``("next", success)``, ``("next", terminated)``/``done`` when asked)
    of every sampled transition with the current classifier, as VICE does before each critic update.
    A batch without a ``"next"`` entry is relabelled at its root.

    Args:
        classifier: the trained :class:`~torchrl_serl.modules.classifier.SuccessClassifier`.
        mode: ``"prob"``, ``"log_prob"`` or ``"threshold"`` (see ``ClassifierReward``); SERL uses
            ``"threshold"``.
        threshold: success probability threshold in (0, 1) (SERL: 0.5).

    Keyword Args:
        combine: ``"replace"`` the env reward (SERL) or ``"add"`` the classifier reward to it.
        terminate_on_success: set ``terminated`` and ``done`` where ``success`` (SERL's classifier
            wrapper ends the episode on success).
        reward_key, success_key, terminated_key, done_key: keys (defaults are TorchRL's).

    Shapes: reward float32 ``[*B, 1]``; success/terminated/done bool ``[*B, 1]``.
    """

    def __init__(
        self,
        classifier: SuccessClassifier,
        mode: RewardMode = "threshold",
        threshold: float = 0.5,
        *,
        combine: Literal["replace", "add"] = "replace",
        terminate_on_success: bool = False,
        reward_key: NestedKey = "reward",
        success_key: NestedKey = "success",
        terminated_key: NestedKey = "terminated",
        done_key: NestedKey = "done",
    ) -> None:
        if combine not in ("replace", "add"):
            raise ValueError(f"combine must be 'replace' or 'add', got {combine!r}")
        out_keys = [reward_key, success_key]
        if terminate_on_success:
            out_keys += [terminated_key, done_key]
        super().__init__(in_keys=list(classifier.in_keys), out_keys=out_keys)
        self.reward_module = ClassifierReward(classifier, mode, threshold)
        self.combine = combine
        self.terminate_on_success = terminate_on_success
        self.reward_key, self.success_key = reward_key, success_key
        self.terminated_key, self.done_key = terminated_key, done_key

    def _relabel(self, td: TensorDictBase) -> TensorDictBase:
        reward, success = self.reward_module.reward_and_success(td)
        if self.combine == "add":
            if self.reward_key not in td.keys(True):
                raise KeyError(f"combine='add' needs an existing {self.reward_key!r} entry to add to")
            reward = td.get(self.reward_key).to(torch.float32) + reward
        td.set(self.reward_key, reward)
        td.set(self.success_key, success)
        if self.terminate_on_success:
            for key in (self.terminated_key, self.done_key):
                if key not in td.keys(True):
                    raise KeyError(f"terminate_on_success needs a {key!r} entry in the data")
                td.set(key, td.get(key) | success)
        return td

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        return self._relabel(next_tensordict)

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        # No transition has happened yet: nothing has succeeded.
        if self.success_key not in tensordict_reset.keys(True):
            tensordict_reset.set(
                self.success_key,
                torch.zeros((*tensordict_reset.batch_size, 1), dtype=torch.bool, device=tensordict_reset.device),
            )
        return tensordict_reset

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if "next" in tensordict.keys():
            self._relabel(tensordict.get("next"))
        else:
            self._relabel(tensordict)
        return tensordict

    def transform_output_spec(self, output_spec: Composite) -> Composite:
        output_spec = output_spec.clone()
        obs_spec = output_spec["full_observation_spec"]
        done_spec = output_spec["full_done_spec"]
        if self.success_key not in obs_spec.keys(True) and self.success_key not in done_spec.keys(True):
            obs_spec[self.success_key] = Categorical(
                2, shape=(*obs_spec.shape, 1), dtype=torch.bool, device=obs_spec.device
            )
        reward_spec = output_spec["full_reward_spec"]
        old = reward_spec[self.reward_key]
        reward_spec[self.reward_key] = Unbounded(shape=old.shape, dtype=torch.float32, device=old.device)
        return super().transform_output_spec(output_spec)
