import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_serl.modules import TanhGaussianActorNet, make_sac_actor


@pytest.mark.parametrize("param", ["exp", "tanh"])
def test_scale_stays_within_bounds(param):
    net = TanhGaussianActorNet(6, 2, hidden=(16,), std_parametrization=param, std_min=1e-3, std_max=2.0)
    with torch.no_grad():
        net.std_head.bias.fill_(50.0)
    _, scale = net(torch.randn(8, 6))
    assert scale.max() <= 2.0 + 1e-5
    with torch.no_grad():
        net.std_head.bias.fill_(-50.0)
    _, scale = net(torch.randn(8, 6))
    assert scale.min() >= 1e-3 - 1e-7


def test_exp_parametrization_is_serl_clip():
    net = TanhGaussianActorNet(6, 2, hidden=(16,), std_parametrization="exp")
    x = torch.randn(8, 6)
    raw = net.std_head(net.trunk(x))
    torch.testing.assert_close(net(x)[1], raw.exp().clamp(1e-5, 10.0))


def test_actor_samples_squashed_actions_and_log_prob():
    actor = make_sac_actor(6, 3, hidden=(32, 32))
    td = TensorDict(observation=torch.randn(64, 6), batch_size=[64])
    with set_exploration_type(ExplorationType.RANDOM):
        dist = actor.get_dist(td)
        action = dist.rsample()
    assert action.shape == (64, 3) and action.abs().max() < 1
    lp = dist.log_prob(action)
    assert lp.shape == (64,) and torch.isfinite(lp).all()
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        det = actor(td.clone())["action"]
    torch.testing.assert_close(det, torch.tanh(td["loc"]))


def test_log_prob_matches_change_of_variables():
    actor = make_sac_actor(4, 2, hidden=(8,))
    td = TensorDict(observation=torch.randn(5, 4), batch_size=[5])
    dist = actor.get_dist(td)
    u = torch.randn(5, 2) * 0.5
    a = torch.tanh(u)
    loc, scale = td["loc"], td["scale"]
    normal = -((u - loc) ** 2) / (2 * scale**2) - scale.log() - 0.5 * math.log(2 * math.pi)
    expected = (normal - torch.log1p(-a.pow(2))).sum(-1)
    torch.testing.assert_close(dist.log_prob(a), expected, rtol=1e-4, atol=1e-4)


class _Embed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 5)

    def forward(self, x):
        return self.lin(x)


@pytest.mark.parametrize("stop", [True, False])
def test_encoder_path_and_stop_gradient(stop):
    enc = TensorDictModule(_Embed(), in_keys=["pixels_feat"], out_keys=["embedding"])
    actor = make_sac_actor(5, 2, hidden=(8,), encoder=enc, stop_encoder_grad=stop)
    td = TensorDict(pixels_feat=torch.randn(4, 3), batch_size=[4])
    dist = actor.get_dist(td)
    dist.rsample().sum().backward()
    grad = enc.module.lin.weight.grad
    got_grad = grad is not None and bool(grad.abs().sum() > 0)
    assert got_grad is (not stop)


def test_xavier_init_is_serls_default_init():
    """``weight_init="xavier"``: every Linear (trunk and heads) drawn from Xavier-uniform
    (bound sqrt(6 / (fan_in + fan_out)), variance bound^2 / 3), biases zero; LayerNorm untouched."""
    torch.manual_seed(0)
    net = TanhGaussianActorNet(64, 4, hidden=(256, 256), weight_init="xavier")
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 4  # two trunk layers, two heads
    for layer in linears:
        fan_out, fan_in = layer.weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert layer.weight.abs().max() <= bound
        torch.testing.assert_close(layer.weight.var().item(), bound**2 / 3, rtol=0.15, atol=0)
        assert not layer.bias.any()
    torch.manual_seed(0)
    torch_default = TanhGaussianActorNet(64, 4, hidden=(256, 256))
    # nn.Linear's default: bound 1 / sqrt(fan_in), 2.5x narrower than Xavier's on the 256 -> 4 heads
    assert torch_default.loc_head.weight.abs().max() <= 1 / 16 < net.loc_head.weight.abs().max()


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="std_parametrization"):
        TanhGaussianActorNet(4, 2, std_parametrization="softplus")
    with pytest.raises(ValueError, match="weight_init"):
        TanhGaussianActorNet(4, 2, weight_init="orthogonal")
    with pytest.raises(ValueError, match="std_min"):
        TanhGaussianActorNet(4, 2, std_min=1.0, std_max=0.5)


def test_actor_device_puts_weights_and_action_bounds_there():
    """Off the CPU the TanhNormal bounds are tensors on the actor's device (so building the
    distribution copies nothing from the host, as a CUDA graph needs); on the CPU they stay floats.
    The meta device stands in for CUDA here."""
    actor = make_sac_actor(4, 2, hidden=(8,), device="meta")
    bounds = actor.module[-1].distribution_kwargs
    assert all(isinstance(bounds[k], torch.Tensor) and bounds[k].device.type == "meta" for k in ("low", "high"))
    assert all(p.device.type == "meta" for p in actor.parameters())
    assert make_sac_actor(4, 2, hidden=(8,), device="cpu").module[-1].distribution_kwargs == {"low": -1.0, "high": 1.0}
