"""Behaviour cloning of a tanh-Gaussian policy on demonstrations (SERL's ``BCAgent``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torchrl.objectives import BCLoss

BC_MODES = ("log_prob", "mse")


class SERLBCLoss(BCLoss):
    r"""Behaviour cloning for the SAC actor, on states or pixels.

    Extends :class:`torchrl.objectives.BCLoss` (same keys, ``set_keys``, functional actor) with
    what a tanh-squashed policy needs:

    * ``"log_prob"`` (SERL's ``BCAgent``): ``loss_bc = -mean_B log pi(clip(a, -1+eps, 1-eps) | s)``.
      Demo actions on the bounds (a gripper command of exactly +-1 is common) have
      ``atanh(+-1) = +-inf``; clipping them by ``eps`` keeps the likelihood finite.
    * ``"mse"``: deterministic regression of the policy mode ``tanh(loc)`` on the demo action,
      ``loss_bc = mean_B sum_A (tanh(loc) - a)^2``.

    Both modes report the other quantity, detached, as ``log_prob`` / ``mse``. With a pixel
    encoder in the actor (``make_sac_actor(..., encoder=enc, stop_encoder_grad=False)``) the
    loss trains the encoder too.

    Args:
        actor_network: a probabilistic actor with ``TanhNormal`` (``make_sac_actor``).

    Keyword Args:
        mode: ``"log_prob"`` (default, SERL) or ``"mse"``.
        eps: action clip margin for ``"log_prob"`` (default ``1e-4``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Input keys: the actor's ``in_keys`` and ``action`` ``[*B, A]`` in ``[-1, 1]``.

    Example:
        >>> from torchrl_serl.modules import make_sac_actor
        >>> loss = SERLBCLoss(make_sac_actor(3, 2, hidden=(16,)))
        >>> demos = TensorDict(observation=torch.randn(4, 3), action=torch.tensor([[0.5, 1.0]]).expand(4, 2),
        ...                    batch_size=[4])
        >>> loss(demos)["loss_bc"].backward()  # finite although the gripper action sits on the bound
    """

    @dataclass
    class _AcceptedKeys:
        """Keys read by the loss (BCLoss's ``pad_mask`` is not supported).

        Attributes:
            action: the demo action ``[*B, A]`` in ``[-1, 1]``.
        """

        action: NestedKey = "action"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    out_keys = ["loss_bc", "log_prob", "mse"]
    # Declared so LossModule.convert_to_functional does not warn (BCLoss itself omits it).
    target_actor_network_params: TensorDictParams

    def __init__(
        self,
        actor_network: TensorDictModule,
        *,
        mode: str = "log_prob",
        eps: float = 1e-4,
        reduction: str | None = None,
    ) -> None:
        if mode not in BC_MODES:
            raise ValueError(f"mode must be one of {BC_MODES}, got {mode!r}")
        if not 0 < eps < 1:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        if not hasattr(actor_network, "get_dist"):
            raise TypeError(
                f"actor_network must be a probabilistic actor with get_dist, got {type(actor_network).__name__}"
            )
        super().__init__(actor_network, reduction=reduction)
        self.mode = mode
        self.eps = eps
        spec = getattr(actor_network, "spec", None)
        action_spec = spec.get("action", None) if spec is not None else None
        self._action_dim = action_spec.shape[-1] if action_spec is not None else None

    def _set_in_keys(self) -> None:
        self._in_keys = [self.tensor_keys.action, *self.actor_network.in_keys]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        missing = [k for k in self.in_keys if k not in tensordict.keys(True)]
        if missing:
            raise KeyError(f"SERLBCLoss: batch is missing keys {missing}")
        action = tensordict.get(self.tensor_keys.action)
        if not torch.compiler.is_compiling():
            if self._action_dim is not None and action.shape[-1] != self._action_dim:
                raise ValueError(f"demo action must be [*B, {self._action_dim}], got {tuple(action.shape)}")
            if not torch.isfinite(action).all():
                raise ValueError("SERLBCLoss: non-finite values (NaN/inf) in the demo actions")
        with self.actor_network_params.to_module(self.actor_network, preserve_module_state=False):
            dist = self.actor_network.get_dist(tensordict.select(*self.actor_network.in_keys, strict=False))
        log_prob = dist.log_prob(action.clamp(-1 + self.eps, 1 - self.eps))
        mse = (dist.deterministic_sample - action).pow(2).sum(-1)
        loss = -log_prob if self.mode == "log_prob" else mse
        loss = self._reduce_loss(loss, tensordict=tensordict)
        return TensorDict(
            loss_bc=loss, log_prob=log_prob.detach().mean(), mse=mse.detach().mean(), batch_size=[]
        )
