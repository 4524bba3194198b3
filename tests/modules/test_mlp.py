import pytest
import torch
from torch import nn

from torchrl_serl.modules import LayerNormMLP


def test_layer_norm_mlp_matches_serl_block_order():
    mlp = LayerNormMLP(5, 3, hidden=(8, 8))
    x = torch.randn(4, 5)
    # SERL: Dense -> LayerNorm -> act for every hidden layer, plain Dense at the end.
    h = x
    linears = [m for m in mlp if isinstance(m, nn.Linear)]
    norms = [m for m in mlp if isinstance(m, nn.LayerNorm)]
    for lin, ln in zip(linears[:-1], norms):
        h = torch.tanh(ln(lin(h)))
    expected = linears[-1](h)
    torch.testing.assert_close(mlp(x), expected)


def test_trunk_only_activates_last_layer():
    trunk = LayerNormMLP(5, None, hidden=(8, 6))
    out = trunk(torch.randn(2, 7, 5))
    assert out.shape == (2, 7, 6)
    assert out.abs().max() <= 1.0  # ends with tanh, SERL's activate_final=True
    assert sum(isinstance(m, nn.LayerNorm) for m in trunk) == 2


def test_plain_mlp_without_layer_norm():
    mlp = LayerNormMLP(5, 2, hidden=(8,), layer_norm=False)
    assert not any(isinstance(m, nn.LayerNorm) for m in mlp)


@pytest.mark.parametrize("kwargs", [{"in_features": 0}, {"hidden": ()}, {"hidden": (8, -1)}, {"out_features": 0}])
def test_bad_sizes_raise(kwargs):
    args = {"in_features": 5, "out_features": 2, "hidden": (8,)}
    args.update(kwargs)
    with pytest.raises(ValueError):
        LayerNormMLP(**args)
