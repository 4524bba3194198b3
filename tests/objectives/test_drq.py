import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SoftUpdate
from torchrl.objectives.sac import compute_rsample_log_prob

from torchrl_serl.modules.drq_networks import make_drq_networks, make_drq_policy
from torchrl_serl.objectives.drq import DrQLoss

SIZE = 32


def transitions(b=8, size=SIZE, seed=0):
    g = torch.Generator().manual_seed(seed)

    def img():
        return torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g)

    return TensorDict(
        front=img(),
        wrist=img(),
        observation=torch.randn(b, 7, generator=g),
        action=torch.rand(b, 4, generator=g) * 2 - 1,
        next=TensorDict(
            front=img(),
            wrist=img(),
            observation=torch.randn(b, 7, generator=g),
            reward=torch.randn(b, 1, generator=g),
            done=torch.zeros(b, 1, dtype=torch.bool),
            terminated=torch.zeros(b, 1, dtype=torch.bool),
            batch_size=[b],
        ),
        batch_size=[b],
    )


def make_loss(encoder="resnet10", num_critics=4, **kwargs):
    actor, qvalue, enc = make_drq_networks(image_size=SIZE, encoder=encoder, num_critics=num_critics, hidden=(32, 32))
    loss = DrQLoss(actor, qvalue, enc, **kwargs)
    loss.make_value_estimator(gamma=0.96)
    return loss, actor, qvalue, enc


def trunk_inputs(enc):
    seen = []
    for trunk in enc.trunks.values():
        trunk.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    return seen


def test_actor_loss_gives_no_gradient_to_the_shared_encoder():
    loss, actor, qvalue, enc = make_loss()
    out = loss(transitions())
    heads = enc.head_parameters()
    out["loss_actor"].backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in heads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.parameters())
    assert all(p.grad is None for p in qvalue.parameters())  # critic params detached in the actor loss
    out["loss_qvalue"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads)
    assert all(p.grad is None for p in enc.trunk_parameters())  # frozen trunk


def test_frozen_trunk_runs_once_per_augmented_image():
    loss, *_ , enc = make_loss()
    seen = trunk_inputs(enc)
    b = 8
    loss(transitions(b))  # full update: critic + target + actor
    assert [x.shape[0] for x in seen] == [2 * 2 * b]  # (obs, next) x 2 cameras, one call
    seen.clear()
    loss.loss_critic(transitions(b))
    assert [x.shape[0] for x in seen] == [2 * 2 * b]
    seen.clear()
    loss.loss_actor_alpha(transitions(b))
    assert [x.shape[0] for x in seen] == [2 * b]


def test_trained_trunk_has_a_target_copy():
    loss, *_, enc = make_loss(encoder="small")
    seen = trunk_inputs(enc)
    out = loss(transitions())
    # obs with grad (online), next obs for the policy (online) and for the target critic (target).
    assert [x.shape[0] for x in seen] == [16, 16, 16]
    out["loss_qvalue"].backward()
    assert enc.trunk("front").convs[0].weight.grad.abs().sum() > 0


def _shift_of(aug, ref, pad=4):
    """(dy, dx) such that aug is ref shifted with edge replication, or None."""
    from torch.nn.functional import pad as fpad

    padded = fpad(ref[None].float(), (pad,) * 4, mode="replicate")[0]
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            crop = padded[:, pad + dy : pad + dy + ref.shape[-2], pad + dx : pad + dx + ref.shape[-1]]
            if torch.equal(crop, aug.float()):
                return dy, dx
    return None


def test_augmentation_is_independent_per_sample_camera_and_time():
    loss, *_, enc = make_loss()
    seen = trunk_inputs(enc)
    ramp = (torch.arange(SIZE * SIZE) % 251).view(1, SIZE, SIZE).expand(3, SIZE, SIZE).to(torch.uint8)
    td = transitions(6)
    for key in ("front", "wrist", ("next", "front"), ("next", "wrist")):
        td.set(key, ramp.expand(6, 3, SIZE, SIZE).clone())
    loss.loss_critic(td)
    images = seen[0]  # [camera, time, sample] flattened
    shifts = [_shift_of(img, ramp) for img in images]
    assert None not in shifts  # every image is a <= 4 px edge-replicated shift
    assert len(set(shifts)) > 10  # 24 images, independent shifts
    by_cam = torch.tensor(shifts).view(2, 2, 6, 2)
    assert not torch.equal(by_cam[0], by_cam[1])  # cameras differ
    assert not torch.equal(by_cam[:, 0], by_cam[:, 1])  # obs and next obs differ
    seen.clear()
    loss_na = make_loss(augment=False)
    seen = trunk_inputs(loss_na[3])
    loss_na[0].loss_critic(td)
    assert all(torch.equal(img, ramp) for img in seen[0])


def test_critic_target_uses_target_encoder_and_online_policy_by_hand():
    loss, actor, qvalue, enc = make_loss(augment=False, num_critics=3, critic_subset=3)
    with torch.no_grad():  # make online and target encoders differ
        for p in loss.target_encoder_params.values(True, True):
            if p.requires_grad is False and p.ndim == 2:
                p.add_(0.05)
    td = transitions(5)
    torch.manual_seed(3)
    got = loss.loss_critic(td)["loss_qvalue"]

    torch.manual_seed(3)
    with torch.no_grad():
        next_obs = td["next"].select("front", "wrist", "observation")
        online_next = enc(next_obs.clone())["embedding"]
        with loss.target_encoder_params.to_module(enc):
            target_next = enc(next_obs.clone())["embedding"]
        with set_exploration_type(ExplorationType.RANDOM):
            dist = actor.get_dist(TensorDict(embedding=online_next, batch_size=[5]))
            next_action, _ = compute_rsample_log_prob(dist)
        with loss.target_qvalue_network_params.to_module(qvalue):
            q_next = qvalue(TensorDict(embedding=target_next, action=next_action, batch_size=[5]))
        y = td["next", "reward"] + 0.96 * q_next["state_action_value"].amin(-2)
    emb = enc(td.select("front", "wrist", "observation"))["embedding"]
    q = qvalue(TensorDict(embedding=emb, action=td["action"], batch_size=[5]))["state_action_value"]
    expected = (q - y.unsqueeze(-2)).pow(2).sum((-2, -1)).mean()
    torch.testing.assert_close(got, expected)


def test_plain_torchrl_pipeline_replay_buffer_and_optimizers():
    torch.manual_seed(0)
    loss, actor, qvalue, enc = make_loss(encoder="small")
    updater = SoftUpdate(loss, tau=0.05)
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(64), batch_size=16)
    data = transitions(64, seed=1)
    # Reward readable from pixels: the brightness of the front camera.
    data["next", "reward"] = data["front"].float().mean((1, 2, 3)).unsqueeze(-1) / 128 - 1
    rb.extend(data)
    critic_opt = torch.optim.Adam([*loss.qvalue_network_params.values(True, True), *enc.parameters()], 3e-4)
    actor_opt = torch.optim.Adam(loss.actor_network_params.values(True, True), 3e-4)
    alpha_opt = torch.optim.Adam([loss.log_alpha], 3e-4)
    target_before = loss.target_encoder_params.clone()
    alpha_before = loss.log_alpha.detach().clone()
    losses = []
    for step in range(24):
        batch = rb.sample()
        if step % 4 < 3:
            out = loss.loss_critic(batch)
            critic_opt.zero_grad()
            out["loss_qvalue"].backward()
            critic_opt.step()
        else:
            out = loss(batch)
            for opt in (critic_opt, actor_opt, alpha_opt):
                opt.zero_grad()
            (out["loss_qvalue"] + out["loss_actor"] + out["loss_alpha"]).backward()
            for opt in (critic_opt, actor_opt, alpha_opt):
                opt.step()
        updater.step()
        losses.append(out["loss_qvalue"].item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-6:]) < sum(losses[:6])
    assert not torch.equal(loss.log_alpha.detach(), alpha_before)
    moved = [(a - b).abs().sum() for a, b in zip(loss.target_encoder_params.values(True, True), target_before.values(True, True))]
    assert sum(moved) > 0  # SoftUpdate tracks the encoder's target copy too
    # The acting policy shares the trained encoder and writes actions in [-1, 1].
    policy = make_drq_policy(actor, enc)
    act = policy(rb.sample().exclude("action"))["action"]
    assert act.shape == (16, 4) and act.abs().max() <= 1


def test_bad_batches_fail_with_names():
    loss, *_ = make_loss()
    with pytest.raises(KeyError, match="wrist"):
        loss(transitions().exclude(("next", "wrist")))
    td = transitions()
    td["front"] = td["front"].float()
    with pytest.raises(ValueError, match=r"front.*uint8 \[B, 3, 32, 32\]"):
        loss(td)
    td = transitions()
    td["next", "observation"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite.*observation"):
        loss.loss_critic(td)
    with pytest.raises(ValueError, match="one key per encoder camera"):
        loss.set_keys(image_keys=("front",))
    with pytest.raises(ValueError, match="pad must be in"):
        make_loss(pad=16)


def test_set_keys_renames_cameras_and_state():
    loss, *_ = make_loss()
    loss.set_keys(image_keys=("cam_a", "cam_b"), observation="state")
    td = transitions()
    td = td.rename_key_("front", "cam_a").rename_key_("wrist", "cam_b").rename_key_("observation", "state")
    td["next"].rename_key_("front", "cam_a").rename_key_("wrist", "cam_b").rename_key_("observation", "state")
    out = loss(td)
    assert torch.isfinite(out["loss_qvalue"]) and ("next", "cam_a") in loss.in_keys


def test_stock_value_operator_critic_on_the_embedding():
    from torchrl.modules import MLP, ValueOperator

    actor, _, enc = make_drq_networks(image_size=SIZE, encoder="small", hidden=(32, 32))
    critic = ValueOperator(MLP(enc.out_features + 4, 1, num_cells=[32]), in_keys=["embedding", "action"])
    loss = DrQLoss(actor, critic, enc, num_critics=4, critic_subset=2)
    loss.make_value_estimator(gamma=0.96)
    assert loss.qvalue_network_params["module", "0", "weight"].shape[0] == 4
    out = loss(transitions())
    (out["loss_qvalue"] + out["loss_actor"]).backward()
    assert (loss.qvalue_network_params["module", "0", "weight"].grad.flatten(1).abs().sum(1) > 0).all()
    assert all(p.grad is not None for p in loss.encoder_params.values(True, True))  # critic trains the encoder


def test_select_out_keys_filters_forward():
    loss, *_ = make_loss(encoder="small")
    loss.select_out_keys("loss_qvalue", "loss_actor")
    assert set(loss(transitions()).keys()) == {"loss_qvalue", "loss_actor"}


@pytest.mark.slow
def test_compiled_drq_update_matches_eager():
    loss, *_ = make_loss(encoder="resnet10", num_critics=4, critic_subset=2)
    td = transitions(8)

    def update(batch):
        out = loss(batch)
        return out["loss_qvalue"] + out["loss_actor"] + out["loss_alpha"]

    torch.manual_seed(5)
    eager = update(td)
    compiled = torch.compile(update)
    # fallback_random: compiled code draws the policy noise from eager's RNG, so results match.
    with torch._inductor.config.patch(fallback_random=True):
        torch.manual_seed(5)
        got = compiled(td)
        torch.testing.assert_close(got, eager, rtol=1e-4, atol=1e-4)
        # Fresh batches of the same shape reuse the compiled graph.
        with torch._dynamo.config.patch(error_on_recompile=True):
            for seed in (1, 2):
                assert torch.isfinite(compiled(transitions(8, seed=seed)))


def test_same_losses_and_gradients_as_the_plain_wiring():
    """DrQLoss (trunk once, features reused) == SERLSACLoss with the encoder inside actor and critic."""
    from torchrl_serl.modules.actors import TanhGaussianActorNet
    from torchrl_serl.modules.critics import EnsembleQValue
    from torchrl_serl.modules.sac_networks import make_sac_actor, make_sac_critic
    from torchrl_serl.objectives.sac import SERLSACLoss

    loss, actor, qvalue, enc = make_loss(augment=False, num_critics=4, critic_subset=2)
    e = enc.out_features
    plain_actor = make_sac_actor(e, 4, hidden=(32, 32), encoder=enc)
    plain_critic = make_sac_critic(e, 4, num_critics=4, hidden=(32, 32), encoder=enc)
    def net(module, cls):
        return next(x for x in module.modules() if isinstance(x, cls))

    for cls, src, dst in ((TanhGaussianActorNet, actor, plain_actor), (EnsembleQValue, qvalue, plain_critic)):
        net(dst, cls).load_state_dict(net(src, cls).state_dict())
    plain = SERLSACLoss(plain_actor, plain_critic, critic_subset=2)
    plain.make_value_estimator(gamma=0.96)
    td = transitions(6)

    def run(module, params):
        for p in params:
            p.grad = None
        torch.manual_seed(11)
        out = module(td.clone())
        (out["loss_qvalue"] + out["loss_actor"] + out["loss_alpha"]).backward()
        return out, [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]

    def aligned(a, q, log_alpha):
        # Encoder heads (the same module in both), actor net, critic ensemble, temperature.
        nets = [*net(a, TanhGaussianActorNet).parameters(), *net(q, EnsembleQValue).parameters()]
        return [*enc.head_parameters(), *nets, log_alpha]

    out, grads = run(loss, aligned(actor, qvalue, loss.log_alpha))
    plain_out, plain_grads = run(plain, aligned(plain_actor, plain_critic, plain.log_alpha))
    for key in ("loss_qvalue", "loss_actor", "loss_alpha", "target_q_mean"):
        torch.testing.assert_close(out[key], plain_out[key])
    assert any(g.abs().sum() > 0 for g in grads[: len(enc.head_parameters())])
    for g, pg in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(g, pg, rtol=1e-4, atol=1e-5)


def test_make_drq_networks_variants():
    actor, qvalue, enc = make_drq_networks(image_size=SIZE, encoder="mobilenet", share_trunk=False, num_critics=3)
    assert not enc.shared_trunk and enc.freeze_trunk
    assert enc.out_features == 2 * 256 + 7
    td = enc(transitions(2).exclude("next"))
    assert qvalue(actor(td))["state_action_value"].shape == (2, 3, 1)
    _, _, small = make_drq_networks(image_size=SIZE, encoder="small", freeze_trunk=True)
    assert not small.freeze_trunk  # SERL's small encoder is always trained
    with pytest.raises(ValueError, match="unknown encoder 'resnet18'"):
        make_drq_networks(encoder="resnet18")
    with pytest.raises(ValueError, match="trained from scratch"):
        make_drq_networks(encoder="small", pretrained_path="weights.pt")
