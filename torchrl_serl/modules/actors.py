"""Tanh-Gaussian policy network (SERL's ``Policy`` with ``tanh_squash_distribution=True``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from torchrl_serl.modules.mlp import LayerNormMLP

STD_PARAMETRIZATIONS = ("exp", "tanh")
WEIGHT_INITS = ("torch", "xavier")


class TanhGaussianActorNet(nn.Module):
    """Maps features to the ``(loc, scale)`` of a Gaussian that ``TanhNormal`` squashes.

    Use it inside :class:`torchrl.modules.ProbabilisticActor` with
    ``distribution_class=TanhNormal`` (see :func:`torchrl_serl.modules.make_sac_actor`).

    Args:
        in_features: feature size ``D`` (observation or encoder embedding).
        action_dim: ``A``.
        hidden: trunk widths (SERL: ``(256, 256)``).
        layer_norm: LayerNorm in the trunk (SERL's state examples: ``True``).
        activation: trunk activation class (SERL's state examples: ``nn.Tanh``).
        std_parametrization: ``"exp"`` (SERL: ``std = exp(head)`` clipped to
            ``[std_min, std_max]``) or ``"tanh"`` (``log_std`` squashed into
            ``[log(std_min), log(std_max)]`` by a tanh, smooth at the bounds).
        std_min, std_max: std bounds (SERL's ``Policy`` defaults ``1e-5`` and ``10``; its launcher's
            agents pass ``std_max=5``).
        weight_init: ``"torch"`` (``nn.Linear``'s default) or ``"xavier"`` (SERL's ``default_init``:
            Xavier-uniform weights, zero biases, on the trunk and both heads; the critic ensemble
            always uses it). SERL's larger head weights start the policy with a wider spread of
            means and stds over states.

    Shapes: ``[*B, D] -> loc [*B, A], scale [*B, A]`` (pre-tanh, unitless).
    """

    def __init__(
        self,
        in_features: int,
        action_dim: int,
        hidden: Sequence[int] = (256, 256),
        layer_norm: bool = True,
        activation: type[nn.Module] = nn.Tanh,
        std_parametrization: str = "exp",
        std_min: float = 1e-5,
        std_max: float = 10.0,
        weight_init: str = "torch",
    ) -> None:
        super().__init__()
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, got {weight_init!r}")
        if std_parametrization not in STD_PARAMETRIZATIONS:
            raise ValueError(
                f"std_parametrization must be one of {STD_PARAMETRIZATIONS}, "
                f"got {std_parametrization!r}"
            )
        if not 0 < std_min < std_max:
            raise ValueError(f"need 0 < std_min < std_max, got std_min={std_min}, std_max={std_max}")
        if not isinstance(action_dim, int) or action_dim < 1:
            raise ValueError(f"action_dim must be an int >= 1, got {action_dim!r}")
        self.trunk = LayerNormMLP(
            in_features, None, hidden=hidden, activation=activation, layer_norm=layer_norm
        )
        width = list(hidden)[-1]
        self.loc_head = nn.Linear(width, action_dim)
        self.std_head = nn.Linear(width, action_dim)
        self.std_parametrization = std_parametrization
        self.std_min = std_min
        self.std_max = std_max
        self._log_std_min = math.log(std_min)
        self._log_std_max = math.log(std_max)
        if weight_init == "xavier":
            for layer in self.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Several feature tensors (in_keys) are concatenated on the last dim by TorchRL's MLP.
        h = self.trunk(*features)
        loc = self.loc_head(h)
        raw = self.std_head(h)
        if self.std_parametrization == "exp":
            # Clamping in log space equals clipping the std and never overflows to inf.
            scale = raw.clamp(self._log_std_min, self._log_std_max).exp()
        else:
            span = self._log_std_max - self._log_std_min
            scale = (self._log_std_min + 0.5 * span * (torch.tanh(raw) + 1)).exp()
        return loc, scale
