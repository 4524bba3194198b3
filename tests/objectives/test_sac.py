"""SERLSACLoss: math against hand computations, split updates, bad input, compile."""

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import MLP, ValueOperator
from torchrl.objectives import SoftUpdate
from torchrl.objectives.sac import compute_rsample_log_prob

from torchrl_serl.modules import make_sac_actor, make_sac_critic
from torchrl_serl.objectives import SERLSACLoss

OBS, ACT, B = 3, 2, 16
LOSS_KEYS = ("loss_qvalue", "loss_actor", "loss_alpha")


def _batch(b=B, terminated=False):
    g = torch.Generator().manual_seed(1)
    return TensorDict(
        observation=torch.randn(b, OBS, generator=g),
        action=torch.rand(b, ACT, generator=g) * 2 - 1,
        next=TensorDict(
            observation=torch.randn(b, OBS, generator=g),
            reward=torch.randn(b, 1, generator=g),
            done=torch.full((b, 1), terminated),
            terminated=torch.full((b, 1), terminated),
            batch_size=[b],
        ),
        batch_size=[b],
    )


def _loss(num_critics=4, gamma=0.5, **kwargs):
    loss = SERLSACLoss(
        make_sac_actor(OBS, ACT, hidden=(8,)),
        make_sac_critic(OBS, ACT, num_critics=num_critics, hidden=(8,)),
        **kwargs,
    )
    loss.make_value_estimator(gamma=gamma)
    return loss


def _set_constant_critics(params, values):
    """Every critic i outputs values[i] whatever its input: last layer weight 0, bias values[i]."""
    weights, biases = params["module", "weights"], params["module", "biases"]
    last = str(len(weights.keys()) - 1)
    weights[last].data.zero_()
    biases[last].data.copy_(torch.as_tensor(values, dtype=torch.float32).view(-1, 1, 1))


def _next_log_prob(loss, td, seed):
    """Replays the loss's draw of a' ~ pi(s') (the first random op of loss_critic)."""
    torch.manual_seed(seed)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        dist = loss.actor_network.get_dist(td["next"].select("observation"))
        return compute_rsample_log_prob(dist)[1]


def test_critic_loss_matches_hand_computation_min_over_all():
    loss = _loss(num_critics=4, critic_subset=None, gamma=0.5)
    online = [0.5, -1.0, 2.0, 0.0]
    target = [3.0, 1.5, 4.0, 2.5]
    _set_constant_critics(loss.qvalue_network_params, online)
    _set_constant_critics(loss.target_qvalue_network_params, target)
    td = _batch()
    out = loss.loss_critic(td)
    y = td["next", "reward"] + 0.5 * 1.5  # min(target) = 1.5, no entropy term (SERL default)
    expected = sum((q - y) ** 2 for q in online).mean()
    torch.testing.assert_close(out["loss_qvalue"], expected)
    torch.testing.assert_close(out["target_q_mean"], y.mean())


def test_terminated_transitions_do_not_bootstrap():
    loss = _loss(num_critics=2, critic_subset=2, gamma=0.9)
    _set_constant_critics(loss.qvalue_network_params, [0.0, 0.0])
    _set_constant_critics(loss.target_qvalue_network_params, [10.0, 20.0])
    td = _batch(terminated=True)
    out = loss.loss_critic(td)
    torch.testing.assert_close(out["loss_qvalue"], 2 * (td["next", "reward"] ** 2).mean())


def test_entropy_backup_matches_hand_computation():
    loss = _loss(num_critics=3, critic_subset=None, gamma=0.5, backup_entropy=True, alpha_init=0.2)
    _set_constant_critics(loss.qvalue_network_params, [0.0, 0.0, 0.0])
    _set_constant_critics(loss.target_qvalue_network_params, [1.0, 2.0, 3.0])
    td = _batch()
    torch.manual_seed(7)
    out = loss.loss_critic(td)
    log_prob = _next_log_prob(loss, td, 7)
    y = td["next", "reward"] + 0.5 * (1.0 - 0.2 * log_prob.unsqueeze(-1))
    torch.testing.assert_close(out["target_q_mean"], y.mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["loss_qvalue"], (3 * y**2).mean(), rtol=1e-5, atol=1e-5)


def test_subset_is_drawn_without_replacement_each_update():
    loss = _loss(num_critics=3, critic_subset=2, gamma=1.0)
    _set_constant_critics(loss.qvalue_network_params, [0.0] * 3)
    _set_constant_critics(loss.target_qvalue_network_params, [1.0, 2.0, 3.0])
    td = _batch(b=2)
    td["next", "reward"].zero_()
    mins = torch.stack([loss.loss_critic(td)["target_q_mean"] for _ in range(600)])
    # Without replacement min == 2 only for the subset {1, 2}: p = 1/3 (with replacement: 4/9).
    assert set(mins.tolist()) == {1.0, 2.0}
    assert abs((mins == 2.0).float().mean().item() - 1 / 3) < 0.06
    for _ in range(50):
        idx = loss.draw_target_subset()
        assert idx.numel() == 2 and idx.unique().numel() == 2


def test_sliced_target_equals_full_ensemble_gather():
    loss = _loss(num_critics=5, critic_subset=2)
    td = _batch()
    next_in = td["next"].select("observation").clone()
    next_in["action"] = torch.rand(B, ACT) * 2 - 1
    torch.manual_seed(3)
    fast = loss._target_q(next_in.clone())
    torch.manual_seed(3)
    idx = loss.draw_target_subset()
    with loss.target_qvalue_network_params.to_module(loss.qvalue_network):
        full = loss.qvalue_network(next_in.clone())["state_action_value"]
    torch.testing.assert_close(fast, full[:, idx].amin(-2))


@pytest.mark.parametrize("reduction", ["mean", "min"])
def test_actor_loss_matches_hand_computation(reduction):
    loss = _loss(num_critics=3, actor_reduction=reduction, alpha_init=0.1)
    _set_constant_critics(loss.qvalue_network_params, [1.0, 2.0, 6.0])
    td = _batch()
    torch.manual_seed(5)
    out = loss.loss_actor_alpha(td)
    torch.manual_seed(5)
    with set_exploration_type(ExplorationType.RANDOM):
        _, log_prob = compute_rsample_log_prob(loss.actor_network.get_dist(td.select("observation")))
    q = 3.0 if reduction == "mean" else 1.0
    torch.testing.assert_close(out["loss_actor"], (0.1 * log_prob - q).mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["entropy"], -log_prob.mean(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["lagrange", "log"])
def test_temperature_loss_and_gradient(form):
    loss = _loss(temperature_loss=form, alpha_init=0.01)
    assert loss.target_entropy.item() == -ACT / 2  # SERL's default -|A|/2
    td = _batch()
    out = loss.loss_actor_alpha(td)
    h, target = out["entropy"], -ACT / 2
    torch.testing.assert_close(out["alpha"], torch.tensor(0.01))
    out["loss_alpha"].backward()
    # d loss / d log_alpha: lagrange alpha * (H - H*), log (H - H*)
    expected = 0.01 * (h - target) if form == "lagrange" else h - target
    torch.testing.assert_close(loss.log_alpha.grad, expected, rtol=1e-5, atol=1e-6)


def test_losses_touch_disjoint_parameters():
    loss = _loss()
    td = _batch()
    groups = {
        "critic": list(loss.qvalue_network_params.values(True, True)),
        "actor": list(loss.actor_network_params.values(True, True)),
        "alpha": [loss.log_alpha],
    }
    expected = {"loss_qvalue": "critic", "loss_actor": "actor", "loss_alpha": "alpha"}
    out = loss(td)
    for key, owner in expected.items():
        loss.zero_grad(set_to_none=True)
        out[key].backward(retain_graph=True)
        for name, params in groups.items():
            has_grad = any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
            assert has_grad is (name == owner), (key, name)


def test_critic_only_steps_leave_actor_and_alpha_untouched():
    loss = _loss()
    updater = SoftUpdate(loss, tau=0.005)
    critic_opt = torch.optim.Adam(loss.qvalue_network_params.values(True, True), lr=1e-3)
    actor_opt = torch.optim.Adam([*loss.actor_network_params.values(True, True), loss.log_alpha], lr=1e-3)
    actor_before = loss.actor_network_params.clone()
    alpha_before = loss.log_alpha.detach().clone()
    critic_before = loss.qvalue_network_params.clone()
    target_before = loss.target_qvalue_network_params.clone()
    td = _batch()
    snapshot = td.clone()
    for _ in range(8):
        critic_opt.zero_grad()
        loss.loss_critic(td)["loss_qvalue"].backward()
        critic_opt.step()
        updater.step()
    assert (loss.actor_network_params == actor_before).all()
    assert torch.equal(loss.log_alpha.detach(), alpha_before)
    assert len(actor_opt.state) == 0
    assert not (loss.qvalue_network_params == critic_before).all()
    assert not (loss.target_qvalue_network_params == target_before).all()
    # Nothing written into the batch (no td_error): the same batch can be reused as is.
    assert set(td.keys(True)) == set(snapshot.keys(True))
    assert (td == snapshot).all()
    actor_opt.zero_grad()
    out = loss.loss_actor_alpha(td)
    (out["loss_actor"] + out["loss_alpha"]).backward()
    actor_opt.step()
    assert not (loss.actor_network_params == actor_before).all()
    assert not torch.equal(loss.log_alpha.detach(), alpha_before)


def test_soft_update_moves_targets_by_tau():
    loss = _loss()
    updater = SoftUpdate(loss, tau=0.25)
    key = ("module", "weights", "0")
    with torch.no_grad():
        loss.qvalue_network_params[key].add_(1.0)
    before = loss.target_qvalue_network_params[key].clone()
    updater.step()
    torch.testing.assert_close(
        loss.target_qvalue_network_params[key], before + 0.25 * (loss.qvalue_network_params[key] - before)
    )


def test_set_keys_renames_inputs():
    actor = make_sac_actor(OBS, ACT, hidden=(8,), in_keys=("state",))
    critic = make_sac_critic(OBS, ACT, num_critics=2, hidden=(8,), in_keys=("state", "act"))
    loss = SERLSACLoss(actor, critic)
    loss.set_keys(action="act", reward="rew")
    td = _batch()
    td.rename_key_("observation", "state")
    td["next"].rename_key_("observation", "state")
    td.rename_key_("action", "act")
    td["next"].rename_key_("reward", "rew")
    out = loss(td)
    assert torch.isfinite(out["loss_qvalue"]) and torch.isfinite(out["loss_actor"])


def _stock_critic():
    """TorchRL's critic as in its SAC tutorial: one Q(s, a) MLP writing [*B, 1]."""
    return ValueOperator(MLP(OBS + ACT, 1, num_cells=[8]), in_keys=["observation", "action"])


def _set_constant_stock_critics(params, values):
    """Stacked copies of _stock_critic: copy i outputs values[i] (last Linear weight 0, bias values[i])."""
    params["module", "2", "weight"].data.zero_()
    params["module", "2", "bias"].data.copy_(torch.as_tensor(values, dtype=torch.float32).view(-1, 1))


def test_stock_value_operator_is_copied_into_independent_critics():
    loss = SERLSACLoss(make_sac_actor(OBS, ACT, hidden=(8,)), _stock_critic(), num_critics=4, critic_subset=2)
    params = loss.qvalue_network_params
    assert all(p.shape[0] == 4 for p in params.values(True, True))
    weight = params["module", "0", "weight"]
    assert all(not torch.equal(weight[0], weight[i]) for i in range(1, 4))  # re-initialised copies
    assert (loss.target_qvalue_network_params == params.data).all()
    td = _batch()
    q_in = td.select("observation", "action")
    q = loss._critic_values(params, q_in)
    assert q.shape == (B, 4, 1)
    for i in range(4):
        with params[i].to_module(loss.qvalue_network):
            torch.testing.assert_close(q[:, i], loss.qvalue_network(q_in.clone())["state_action_value"])
    out = loss(td)
    (out["loss_qvalue"] + out["loss_actor"]).backward()
    assert (weight.grad.flatten(1).abs().sum(1) > 0).all()  # every copy is trained


@pytest.mark.parametrize("subset", [None, 2])
def test_stock_critic_loss_matches_hand_computation(subset):
    loss = SERLSACLoss(make_sac_actor(OBS, ACT, hidden=(8,)), _stock_critic(), num_critics=4, critic_subset=subset)
    loss.make_value_estimator(gamma=0.5)
    online = [0.5, -1.0, 2.0, 0.0]
    target = [3.0, 1.5, 4.0, 2.5]
    _set_constant_stock_critics(loss.qvalue_network_params, online)
    _set_constant_stock_critics(loss.target_qvalue_network_params, target)
    td = _batch()
    mins = set()
    for _ in range(30):
        out = loss.loss_critic(td)
        next_v = ((out["target_q_mean"] - td["next", "reward"].mean()) / 0.5).item()
        mins.add(round(next_v, 4))
        y = td["next", "reward"] + 0.5 * next_v
        torch.testing.assert_close(out["loss_qvalue"], sum((q - y) ** 2 for q in online).mean())
    # min over all 4: always 1.5; min over 2 drawn without replacement: 3 or 2.5 unless 1.5 is drawn
    assert mins == ({1.5} if subset is None else {1.5, 2.5, 3.0})


def test_critic_the_loss_cannot_use_is_rejected_with_both_shapes():
    class ThreeHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(OBS + ACT, 3)

        def forward(self, obs, act):
            return self.lin(torch.cat([obs, act], -1)).unsqueeze(-1)

    critic = TensorDictModule(ThreeHeads(), in_keys=["observation", "action"], out_keys=["state_action_value"])
    with pytest.raises(ValueError, match="num_critics is required for a single critic"):
        SERLSACLoss(make_sac_actor(OBS, ACT, hidden=(8,)), critic)
    loss = SERLSACLoss(make_sac_actor(OBS, ACT, hidden=(8,)), critic, num_critics=3, critic_subset=2)
    loss.make_value_estimator(gamma=0.9)
    with pytest.raises(ValueError, match=r"must write 'state_action_value' \[\*B, 1\] = \[16, 1\], got \[16, 3, 1\]"):
        loss(_batch())


def test_select_out_keys_filters_forward():
    loss = _loss()
    td = _batch()
    assert set(loss(td).keys()) == set(loss.out_keys)
    loss.select_out_keys("loss_actor", "loss_qvalue")
    assert set(loss(td).keys()) == {"loss_actor", "loss_qvalue"}
    loss.reset_out_keys()
    assert set(loss(td).keys()) == {*LOSS_KEYS, "alpha", "entropy", "q_mean", "target_q_mean"}


def test_accepted_keys_are_the_keys_the_loss_reads():
    loss = _loss()
    assert set(loss.tensor_keys.__dataclass_fields__) == {
        "action", "state_action_value", "reward", "done", "terminated", "priority_weight"
    }
    for unused in ("priority", "value", "log_prob"):  # SACLoss's, never read or written here
        with pytest.raises(ValueError, match="not an accepted tensordict key"):
            loss.set_keys(**{unused: "x"})


def test_priority_weights_are_read_when_present():
    loss = _loss()
    td = _batch()
    torch.manual_seed(0)
    plain = loss.loss_critic(td)["loss_qvalue"]
    td["priority_weight"] = torch.zeros(B)
    td["priority_weight"][:4] = 1.0
    torch.manual_seed(0)
    weighted = loss.loss_critic(td)["loss_qvalue"]
    assert not torch.allclose(plain, weighted)


def test_bad_configuration_and_input_raise_clear_errors():
    with pytest.raises(ValueError, match=r"critic_subset must be an int in \[1, num_critics=4\], got 5"):
        _loss(num_critics=4, critic_subset=5)
    with pytest.raises(ValueError, match="actor_reduction"):
        _loss(actor_reduction="max")
    with pytest.raises(ValueError, match="temperature_loss"):
        _loss(temperature_loss="softplus")
    loss = _loss()
    td = _batch()
    with pytest.raises(KeyError, match="missing keys"):
        loss(td.exclude(("next", "reward")))
    bad = td.clone()
    bad["next", "reward"] = torch.zeros(B)
    with pytest.raises(ValueError, match=r"reward.*\[B, 1\]"):
        loss(bad)
    bad = td.clone()
    bad["observation"][3, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite.*observation"):
        loss.loss_critic(bad)


@pytest.mark.parametrize("backend", ["aot_eager"])
def test_compiled_update_does_not_recompile(backend):
    import torch._dynamo
    import torch._inductor.config

    torch._dynamo.reset()
    loss = _loss(num_critics=4, critic_subset=2)
    updater = SoftUpdate(loss, tau=0.005)
    opt = torch.optim.Adam(loss.parameters(), lr=1e-3)
    # All three losses in one graph. aot_eager runs the whole dynamo + AOTAutograd stack (where
    # recompiles and graph breaks come from) without inductor's C++ build, which takes minutes
    # on a busy 2-core runner; benchmarks/bench_sac_state.py --compile runs inductor.
    compiled_loss = torch.compile(loss, backend=backend)
    eager, compiled = [], []
    # fallback_random: compiled code draws the same random numbers as eager, so they compare.
    with torch._dynamo.config.patch(error_on_recompile=True), torch._inductor.config.patch(fallback_random=True):
        for i in range(3):
            td = _batch()  # fresh batches, as a replay buffer gives
            torch.manual_seed(i)
            eager.append(loss(td).select(*LOSS_KEYS).detach())
            torch.manual_seed(i)
            out = compiled_loss(td)
            compiled.append(out.select(*LOSS_KEYS).detach())
            opt.zero_grad()
            sum(out[k] for k in LOSS_KEYS).backward()
            opt.step()
            updater.step()
    for key in LOSS_KEYS:
        torch.testing.assert_close(
            torch.stack([c[key] for c in compiled]), torch.stack([e[key] for e in eager]), rtol=1e-4, atol=1e-4
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_entries_finds_every_kind_in_every_float_dtype(dtype, bad):
    from torchrl_serl.objectives.sac import non_finite_entries

    td = TensorDict({"a": torch.randn(4, 3).to(dtype), "b": torch.full((4, 3), 6e4).to(dtype),
                     "c": torch.zeros(0, 3, dtype=dtype), "i": torch.ones(4, dtype=torch.int64)}, [])
    assert non_finite_entries(td, ["a", "b", "c", "i"]) == []  # large finite float16 values are finite
    td["b"][2, 1] = bad
    assert non_finite_entries(td, ["a", "b", "c", "i"]) == ["b"]
