"""Layer-norm MLP, SERL's ``MLP(use_layer_norm=True)`` built from TorchRL's ``MLP``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchrl.modules import MLP


def _check_dims(name: str, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class LayerNormMLP(MLP):
    """``Linear -> LayerNorm -> activation`` blocks, as SERL's ``MLP(use_layer_norm=True)``.

    A thin configuration of :class:`torchrl.modules.MLP` (``norm_class=nn.LayerNorm``), so it
    keeps TorchRL's behaviour (several inputs are concatenated on the last dim).

    Args:
        in_features: input size ``D``.
        out_features: output size; ``None`` returns the last hidden layer (SERL's
            ``activate_final=True`` trunk, used under separate heads).
        hidden: hidden widths, SERL default ``(256, 256)``.
        activation: activation class, SERL's state examples use ``nn.Tanh``.
        layer_norm: set ``False`` for a plain MLP.

    Shapes: ``[*B, D] -> [*B, out_features]`` (or ``[*B, hidden[-1]]``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int | None = None,
        hidden: Sequence[int] = (256, 256),
        activation: type[nn.Module] = nn.Tanh,
        layer_norm: bool = True,
    ) -> None:
        _check_dims("in_features", in_features)
        hidden = [int(h) for h in hidden]
        if not hidden:
            raise ValueError("hidden must name at least one layer width, got ()")
        for h in hidden:
            _check_dims("hidden width", h)
        trunk_only = out_features is None
        if trunk_only:
            # TorchRL's MLP always ends with a Linear; the trunk is the hidden stack with
            # the last hidden layer activated, as SERL's activate_final=True.
            out_features, hidden = hidden[-1], hidden[:-1]
        else:
            _check_dims("out_features", out_features)
        n_norm = len(hidden) + int(trunk_only)
        widths = [*hidden, out_features][:n_norm]
        super().__init__(
            in_features=in_features,
            out_features=out_features,
            num_cells=hidden,
            activation_class=activation,
            activate_last_layer=trunk_only,
            norm_class=nn.LayerNorm if layer_norm else None,
            norm_kwargs=[{"normalized_shape": w} for w in widths] if layer_norm else None,
        )
