import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict

from torchrl_serl.modules import EnsembleQValue, make_sac_critic


def _reference_critic(ens: EnsembleQValue, i: int, x: torch.Tensor) -> torch.Tensor:
    """Critic ``i`` computed alone, layer by layer, as SERL's Critic."""
    h = x
    n = len(ens.weights)
    for layer in range(n - 1):
        h = h @ ens.weights[layer][i] + ens.biases[layer][i, 0]
        h = F.layer_norm(h, h.shape[-1:], ens.ln_weights[layer][i, 0], ens.ln_biases[layer][i, 0])
        h = torch.tanh(h)
    return h @ ens.weights[-1][i] + ens.biases[-1][i, 0]


def test_ensemble_equals_independent_critics():
    ens = EnsembleQValue(7, num_critics=4, hidden=(16, 8))
    with torch.no_grad():  # non-trivial LayerNorm affine so the test sees it
        for p in [*ens.ln_weights, *ens.ln_biases, *ens.biases]:
            p.normal_()
    obs, act = torch.randn(3, 5, 4), torch.randn(3, 5, 3)
    q = ens(obs, act)
    assert q.shape == (3, 5, 4, 1)
    x = torch.cat([obs, act], -1)
    for i in range(4):
        torch.testing.assert_close(q[..., i, :], _reference_critic(ens, i, x), rtol=1e-5, atol=1e-5)


def test_critics_are_initialised_independently():
    ens = EnsembleQValue(7, num_critics=3)
    q = ens(torch.randn(10, 4), torch.randn(10, 3))
    assert not torch.allclose(q[:, 0], q[:, 1])


def test_subset_of_parameters_evaluates_subset_of_critics():
    critic = make_sac_critic(4, 3, num_critics=5, hidden=(16, 16))
    td = TensorDict(observation=torch.randn(6, 4), action=torch.randn(6, 3), batch_size=[6])
    full = critic(td.clone())["state_action_value"]
    params = TensorDict.from_module(critic)
    idx = torch.tensor([3, 1])
    with params.apply(lambda p: p[idx]).to_module(critic):
        sub = critic(td.clone())["state_action_value"]
    assert sub.shape == (6, 2, 1)
    torch.testing.assert_close(sub, full[:, idx])


def test_gradients_reach_every_critic():
    ens = EnsembleQValue(5, num_critics=3, hidden=(8, 8))
    ens(torch.randn(4, 3), torch.randn(4, 2)).sum().backward()
    for p in ens.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_bad_inputs_raise_clear_errors():
    ens = EnsembleQValue(5, num_critics=2, hidden=(8,))
    with pytest.raises(ValueError, match="input features"):
        ens(torch.randn(4, 4), torch.randn(4, 2))
    with pytest.raises(ValueError, match="batch dims"):
        ens(torch.randn(4, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="num_critics"):
        EnsembleQValue(5, num_critics=0)


def test_critic_with_encoder_reads_embedding_and_trains_encoder():
    from tensordict.nn import TensorDictModule

    enc = TensorDictModule(torch.nn.Linear(6, 5), in_keys=["pixels_feat"], out_keys=["embedding"])
    critic = make_sac_critic(5, 2, num_critics=3, hidden=(8,), encoder=enc)
    td = TensorDict(pixels_feat=torch.randn(4, 6), action=torch.randn(4, 2), batch_size=[4])
    q = critic(td)["state_action_value"]
    assert q.shape == (4, 3, 1) and "embedding" in td.keys()
    q.sum().backward()
    assert enc.module.weight.grad is not None and enc.module.weight.grad.abs().sum() > 0
