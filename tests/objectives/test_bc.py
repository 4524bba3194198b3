import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from torchrl_serl.modules import make_sac_actor
from torchrl_serl.objectives.bc import SERLBCLoss


def _demos(b=32, obs=4, act=2):
    g = torch.Generator().manual_seed(0)
    action = torch.rand(b, act, generator=g) * 2 - 1
    action[0, 0] = 1.0  # a gripper command on the bound, as demos often have
    return TensorDict(observation=torch.randn(b, obs, generator=g), action=action, batch_size=[b])


def _gauss_tanh_log_prob(u, loc, scale):
    normal = -((u - loc) ** 2) / (2 * scale**2) - scale.log() - 0.5 * math.log(2 * math.pi)
    return (normal - torch.log1p(-torch.tanh(u) ** 2)).sum(-1)


def test_log_likelihood_matches_hand_computation_with_clipped_actions():
    actor = make_sac_actor(4, 2, hidden=(16,))
    loss = SERLBCLoss(actor, eps=1e-3)
    td = _demos()
    out = loss(td)
    feats = actor.module[0](td.select("observation").clone())
    a = td["action"].clamp(-1 + 1e-3, 1 - 1e-3)
    expected = -_gauss_tanh_log_prob(torch.atanh(a), feats["loc"], feats["scale"]).mean()
    torch.testing.assert_close(out["loss_bc"], expected, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(out["loss_bc"])
    assert set(td.keys()) == {"observation", "action"}  # the batch is left as it was


def test_mse_mode_regresses_the_policy_mode():
    actor = make_sac_actor(4, 2, hidden=(16,))
    loss = SERLBCLoss(actor, mode="mse")
    td = _demos()
    out = loss(td)
    loc = actor.module[0](td.select("observation").clone())["loc"]
    expected = (torch.tanh(loc) - td["action"]).pow(2).sum(-1).mean()
    torch.testing.assert_close(out["loss_bc"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["log_prob", "mse"])
def test_bc_fits_demonstrations(mode):
    actor = make_sac_actor(4, 2, hidden=(32, 32))
    loss = SERLBCLoss(actor, mode=mode)
    td = _demos(b=64)
    td["action"] = torch.tanh(td["observation"][:, :2])  # a learnable expert
    opt = torch.optim.Adam(loss.parameters(), lr=3e-3)
    mse0 = loss(td)["mse"].item()
    for _ in range(300):
        opt.zero_grad()
        loss(td)["loss_bc"].backward()
        opt.step()
    assert loss(td)["mse"].item() < 0.1 * mse0


class _Embed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)
        self.lin = torch.nn.LazyLinear(6)

    def forward(self, pixels):
        return self.lin(self.conv(pixels.float() / 255).flatten(-3))


def test_pixels_train_the_encoder_through_the_actor():
    enc = TensorDictModule(_Embed(), in_keys=["front"], out_keys=["embedding"])
    actor = make_sac_actor(6, 2, hidden=(16,), encoder=enc, stop_encoder_grad=False)
    td = TensorDict(
        front=torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8),
        action=torch.rand(8, 2) * 2 - 1,
        batch_size=[8],
    )
    actor(td.clone())  # materialise the lazy layer
    loss = SERLBCLoss(actor)
    loss(td)["loss_bc"].backward()
    assert enc.module.conv.weight.grad is not None and enc.module.conv.weight.grad.abs().sum() > 0


def test_bad_input_raises():
    loss = SERLBCLoss(make_sac_actor(4, 2, hidden=(8,)))
    td = _demos()
    with pytest.raises(KeyError, match="missing keys"):
        loss(td.exclude("action"))
    bad = td.clone()
    bad["action"][2, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        loss(bad)
    bad = td.clone()
    bad["action"] = torch.zeros(32, 3)
    with pytest.raises(ValueError, match=r"\[\*B, 2\]"):
        loss(bad)
    with pytest.raises(ValueError, match="mode"):
        SERLBCLoss(make_sac_actor(4, 2, hidden=(8,)), mode="l1")


def test_select_out_keys_and_accepted_keys():
    loss = SERLBCLoss(make_sac_actor(4, 2, hidden=(16,)))
    assert set(loss.tensor_keys.__dataclass_fields__) == {"action"}  # BCLoss's pad_mask is not read
    loss.select_out_keys("loss_bc")
    assert set(loss(_demos()).keys()) == {"loss_bc"}
