"""Vectorised Q-value ensemble: all N critics in one batched computation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class EnsembleQValue(nn.Module):
    """N independent ``Q(s, a)`` MLPs evaluated together with stacked weights.

    Each critic is SERL's ``Critic``: ``cat(obs, action) -> [Linear -> LayerNorm -> act] x L ->
    Linear(1)``. Weights are stacked on a leading ensemble dim (``weight_i: [N, in, out]``) and
    evaluated with one ``matmul``/``baddbmm`` per layer instead of a Python loop or ``vmap``.
    The ensemble size is read from the weights at call time, so a loss can swap in a subset of
    the (target) parameters (``params[idx]``, e.g. through ``TensorDict.to_module``) and
    evaluate only those critics.

    Args:
        in_features: ``obs_dim + action_dim``.
        num_critics: ensemble size N (SERL: 10).
        hidden: hidden widths (SERL: ``(256, 256)``).
        layer_norm: LayerNorm after every hidden Linear (SERL/RLPD: ``True``).
        activation: elementwise activation (SERL's state examples: ``torch.tanh``).

    Shapes: ``obs [*B, D_obs]``, ``action [*B, A]`` -> ``[*B, N, 1]``.
    """

    def __init__(
        self,
        in_features: int,
        num_critics: int = 10,
        hidden: Sequence[int] = (256, 256),
        layer_norm: bool = True,
        activation=torch.tanh,
    ) -> None:
        super().__init__()
        if not isinstance(num_critics, int) or num_critics < 1:
            raise ValueError(f"num_critics must be an int >= 1, got {num_critics!r}")
        if not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be an int >= 1, got {in_features!r}")
        hidden = [int(h) for h in hidden]
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must be positive widths, got {hidden}")
        self.in_features = in_features
        self.num_critics = num_critics
        self.layer_norm = layer_norm
        self.activation = activation
        widths = [in_features, *hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.ln_weights = nn.ParameterList()
        self.ln_biases = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            self.weights.append(nn.Parameter(torch.empty(num_critics, fan_in, fan_out)))
            self.biases.append(nn.Parameter(torch.zeros(num_critics, 1, fan_out)))
        if layer_norm:
            for w in hidden:
                self.ln_weights.append(nn.Parameter(torch.ones(num_critics, 1, w)))
                self.ln_biases.append(nn.Parameter(torch.zeros(num_critics, 1, w)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # SERL's default_init: variance_scaling(1, fan_avg, uniform) == Xavier uniform, zero bias.
        for w, b in zip(self.weights, self.biases):
            bound = math.sqrt(6.0 / (w.shape[1] + w.shape[2]))
            nn.init.uniform_(w, -bound, bound)
            nn.init.zeros_(b)
        for g, b in zip(self.ln_weights, self.ln_biases):
            nn.init.ones_(g)
            nn.init.zeros_(b)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        # Inputs (e.g. observation, action) are concatenated on the last dim, as SERL's Critic.
        batch = inputs[0].shape[:-1]
        for t in inputs[1:]:
            if t.shape[:-1] != batch:
                shapes = [tuple(t.shape) for t in inputs]
                raise ValueError(f"critic inputs must share their batch dims, got shapes {shapes}")
        x = torch.cat(inputs, -1) if len(inputs) > 1 else inputs[0]
        if x.shape[-1] != self.in_features:
            sizes = [t.shape[-1] for t in inputs]
            raise ValueError(
                f"critic expects {self.in_features} input features (obs_dim + action_dim), "
                f"got {sizes} = {x.shape[-1]}"
            )
        x = x.reshape(-1, x.shape[-1])
        n_layers = len(self.weights)
        # The input is shared by all critics: one broadcast matmul [B, D] @ [N, D, H].
        h = torch.matmul(x, self.weights[0]) + self.biases[0]
        for i in range(n_layers - 1):
            if i > 0:
                h = torch.baddbmm(self.biases[i], h, self.weights[i])
            if self.layer_norm:
                h = F.layer_norm(h, h.shape[-1:])
                h = torch.addcmul(self.ln_biases[i], h, self.ln_weights[i])
            h = self.activation(h)
        q = torch.baddbmm(self.biases[-1], h, self.weights[-1])  # [N, B, 1]
        return q.transpose(0, 1).reshape(*batch, q.shape[0], 1)

    def extra_repr(self) -> str:
        hidden = [w.shape[-1] for w in self.weights[:-1]]
        return (
            f"in_features={self.in_features}, num_critics={self.num_critics}, "
            f"hidden={hidden}, layer_norm={self.layer_norm}"
        )
