"""Encode-once trunk features: the views, the env transform, the acting encoder, the cached DrQ loss."""

import pytest
import torch
from tensordict import TensorDict

from torchrl_serl.data.pixel_storage import FrameDedupReplayBuffer
from torchrl_serl.envs.transforms.trunk_features import TrunkFeatures
from torchrl_serl.modules.augmentation import random_shift
from torchrl_serl.modules.drq_networks import make_drq_networks
from torchrl_serl.modules.encoders import resnet10
from torchrl_serl.modules.encoders.cached_features import (
    CachedFeaturesEncoder,
    encode_views,
    feature_key,
    select_views,
)
from torchrl_serl.objectives.drq import DrQLoss

SIZE = 32


def images(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)


def test_encode_views_is_the_trunk_on_the_unshifted_and_shifted_frames():
    trunk = resnet10().eval()
    x = images()
    feats = encode_views(trunk, x, num_views=3, pad=4, generator=torch.Generator().manual_seed(1))
    assert feats.shape == (6, 3, *trunk.output_shape(SIZE)) and feats.dtype == torch.float16
    with torch.no_grad():
        plain = trunk(x)
        # the same shifts, drawn again from the same seed
        shifted = random_shift(x.unsqueeze(1).expand(-1, 2, -1, -1, -1), 4, torch.Generator().manual_seed(1))
        expected = trunk(shifted.reshape(-1, 3, SIZE, SIZE)).reshape(6, 2, *plain.shape[1:])
    torch.testing.assert_close(feats[:, 0].float(), plain, atol=2e-2, rtol=2e-3)  # float16 rounding
    torch.testing.assert_close(feats[:, 1:].float(), expected, atol=2e-2, rtol=2e-3)
    assert (feats[:, 1:] != feats[:, :1]).any()  # shifted views differ from the frame


def test_encode_views_of_a_channels_last_trunk_are_contiguous():
    trunk = resnet10(channels_last=True).eval()
    plain_trunk = resnet10().eval()
    plain_trunk.load_state_dict(trunk.state_dict())
    feats = encode_views(trunk, images(), num_views=2)
    assert feats.is_contiguous()  # the buffer's layout, which the learner's embeddings read fastest
    expected = encode_views(plain_trunk, images(), num_views=1)[:, 0]
    torch.testing.assert_close(feats[:, 0].float(), expected.float(), atol=2e-2, rtol=2e-3)


def test_encode_views_in_chunks_is_one_call_per_chunk():
    trunk = resnet10().eval()
    x = images(7).reshape(7, 1, 3, SIZE, SIZE)  # a batch shape [7, 1], split 3 + 3 + 1
    chunked = encode_views(trunk, x, num_views=2, generator=torch.Generator().manual_seed(2), chunk=3)
    g = torch.Generator().manual_seed(2)  # the shifts drawn chunk by chunk, in order
    parts = [encode_views(trunk, x[i:i + 3, 0], num_views=2, generator=g) for i in range(0, 7, 3)]
    assert chunked.shape == (7, 1, 2, *trunk.output_shape(SIZE))
    torch.testing.assert_close(chunked[:, 0], torch.cat(parts))


def test_encode_views_refuses_bad_input():
    with pytest.raises(ValueError, match="num_views"):
        encode_views(resnet10(), images(), num_views=0)
    with pytest.raises(ValueError, match="uint8"):
        encode_views(resnet10(), images().float(), num_views=1)
    with pytest.raises(ValueError, match="chunk"):
        encode_views(resnet10(), images(), num_views=1, chunk=0)


def test_select_views_draws_one_stored_view_per_sample():
    feats = torch.arange(5 * 3, dtype=torch.float16).reshape(5, 3, 1, 1, 1).expand(5, 3, 2, 1, 1).contiguous()
    picked = select_views(feats, torch.Generator().manual_seed(0))
    assert picked.shape == (5, 2, 1, 1) and picked.dtype == torch.float16  # as stored
    view = picked[:, 0, 0, 0] - torch.arange(5) * 3  # which of the 3 views each sample got
    assert set(view.tolist()) <= {0.0, 1.0, 2.0}
    assert torch.equal(picked[:, 0], picked[:, 1])  # one view per sample, not per element
    many = select_views(feats.repeat(40, 1, 1, 1, 1), torch.Generator().manual_seed(1))
    drawn = many[:, 0, 0, 0] - torch.arange(5).repeat(40) * 3
    assert set(drawn.tolist()) == {0.0, 1.0, 2.0}  # every view gets drawn


def test_trunk_features_on_the_pixel_env_match_the_acting_encoder():
    from torchrl.envs import TransformedEnv
    from torchrl.envs.utils import check_env_specs

    from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv

    actor, qvalue, encoder = make_drq_networks(image_size=SIZE, num_critics=2, hidden=(16, 16))
    env = TransformedEnv(
        PandaPickCubeEnv(pixels=True, image_size=SIZE, seed=0),
        TrunkFeatures(encoder.trunk("front"), ("front", "wrist"), SIZE, num_views=2, seed=0),
    )
    try:
        check_env_specs(env)
        td = env.reset()
        assert td[feature_key("front")].shape == (2, *encoder.trunk("front").output_shape(SIZE))
        # the acting encoder reads view 0: the same embedding as the full encoder on the raw frames
        with torch.no_grad():
            cached = CachedFeaturesEncoder(encoder)(td.clone())["embedding"]
            full = encoder(td.clone())["embedding"]
        torch.testing.assert_close(cached, full, atol=2e-2, rtol=1e-2)
        rollout = env.rollout(3)  # random actions
        assert rollout["next", feature_key("wrist")].dtype == torch.float16
        # next obs features of step t are the obs features of step t + 1 (encoded once)
        torch.testing.assert_close(rollout["next", feature_key("front")][:-1], rollout[feature_key("front")][1:])
    finally:
        env.close()


def _batch(encoder, b=16, seed=0, cached=False, views=1):
    g = torch.Generator().manual_seed(seed)
    td = TensorDict(
        front=images(b, seed), wrist=images(b, seed + 1),
        observation=torch.randn(b, 7, generator=g), action=torch.rand(b, 4, generator=g) * 2 - 1,
        next=TensorDict(front=images(b, seed + 2), wrist=images(b, seed + 3), observation=torch.randn(b, 7, generator=g),
                        reward=torch.randn(b, 1, generator=g), done=torch.zeros(b, 1, dtype=torch.bool),
                        terminated=torch.zeros(b, 1, dtype=torch.bool), batch_size=[b]),
        batch_size=[b],
    )
    if cached:
        features = TrunkFeatures(encoder.trunk("front"), ("front", "wrist"), SIZE, num_views=views)
        for prefix in ((), ("next",)):
            sub = td.get(prefix) if prefix else td
            features._call(sub)
        td = td.exclude("front", "wrist", ("next", "front"), ("next", "wrist"))
    return td


def test_cached_loss_with_one_unshifted_view_is_the_exact_loss_without_augmentation():
    torch.manual_seed(0)
    actor, qvalue, encoder = make_drq_networks(image_size=SIZE, num_critics=4, hidden=(32, 32))
    exact = DrQLoss(actor, qvalue, encoder, augment=False)
    cached = DrQLoss(actor, qvalue, encoder, cached_features=True)
    for loss in (exact, cached):
        loss.make_value_estimator(gamma=0.96)
    batch = _batch(encoder)
    torch.manual_seed(3)
    out_exact = exact(batch.clone())
    torch.manual_seed(3)
    out_cached = cached(_batch(encoder, cached=True))
    for key in ("loss_qvalue", "loss_actor", "loss_alpha"):
        torch.testing.assert_close(out_cached[key], out_exact[key], rtol=2e-2, atol=1e-3)


def test_cached_loss_trains_the_head_only_and_checks_its_batch():
    actor, qvalue, encoder = make_drq_networks(image_size=SIZE, num_critics=2, hidden=(16, 16))
    loss = DrQLoss(actor, qvalue, encoder, cached_features=True)
    loss.make_value_estimator(gamma=0.96)
    batch = _batch(encoder, cached=True)
    loss.loss_critic(batch)["loss_qvalue"].backward()
    head_grads = [p.grad for p in loss.encoder_params.values(True, True) if p.requires_grad]
    assert head_grads and all(g is not None and g.abs().sum() > 0 for g in head_grads)
    assert all(p.grad is None for p in encoder.trunk_parameters())
    bad = batch.clone()
    bad[feature_key("front")][0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        loss.loss_critic(bad)
    with pytest.raises(ValueError, match="cached features"):
        loss.loss_critic(batch.set(feature_key("wrist"), batch[feature_key("wrist")][:, :, :5]))
    with pytest.raises(KeyError, match="front_features"):
        loss.loss_critic(_batch(encoder))  # images, not features


def test_cached_loss_feeds_the_heads_channel_major_features_with_the_same_results(monkeypatch):
    import torchrl_serl.objectives.drq as drq
    from torchrl_serl.modules.encoders.pooling import SpatialLearnedEmbeddings

    torch.manual_seed(0)
    actor, qvalue, encoder = make_drq_networks(image_size=SIZE, num_critics=2, hidden=(16, 16))
    loss = DrQLoss(actor, qvalue, encoder, cached_features=True, generator=torch.Generator())
    loss.make_value_estimator(gamma=0.96)
    batch = _batch(encoder, cached=True, views=2)
    operands = []
    for head in encoder.heads.values():
        head[0].register_forward_pre_hook(lambda mod, args: operands.append(args[0]))
        assert isinstance(head[0], SpatialLearnedEmbeddings)

    def run():
        loss.generator.manual_seed(1)
        torch.manual_seed(2)
        out = loss(batch.clone())
        loss.zero_grad(set_to_none=True)
        sum(out[k] for k in ("loss_qvalue", "loss_actor", "loss_alpha")).backward()
        return out, [p.grad.clone() for p in loss.parameters() if p.grad is not None]

    out, grads = run()
    # obs (critic), next obs (actor and target) of each camera; each a [C, B, h * w] operand as laid out
    assert len(operands) == 6 and all(x.reshape(*x.shape[:2], -1).transpose(0, 1).is_contiguous() for x in operands)
    monkeypatch.setattr(drq, "stack_channel_major", lambda xs: torch.stack([x.float() for x in xs]))  # as before
    operands.clear()
    out_before, grads_before = run()
    assert not any(x.reshape(*x.shape[:2], -1).transpose(0, 1).is_contiguous() for x in operands)
    for key in ("loss_qvalue", "loss_actor", "loss_alpha"):
        assert torch.equal(out[key], out_before[key])
    assert len(grads) == len(grads_before) > 0 and all(torch.equal(a, b) for a, b in zip(grads, grads_before))


def test_cached_features_need_a_frozen_trunk():
    actor, qvalue, encoder = make_drq_networks(image_size=SIZE, encoder="small", num_critics=2, hidden=(16, 16))
    with pytest.raises(ValueError, match="frozen trunk"):
        DrQLoss(actor, qvalue, encoder, cached_features=True)
    with pytest.raises(ValueError, match="frozen trunk"):
        CachedFeaturesEncoder(encoder)


@pytest.mark.parametrize("chunk", [1, 3, 256])
def test_encode_transitions_is_the_trunk_on_every_frame_and_next_frame(chunk):
    # two episodes of 4 and 3 steps: within an episode ("next", cam) is the following row's frame
    trunk = resnet10().eval()
    frames = images(b=9)
    rows, next_rows = [0, 1, 2, 3, 5, 6, 7], [1, 2, 3, 4, 6, 7, 8]
    data = TensorDict(front=frames[rows], next=TensorDict(front=frames[next_rows], batch_size=[7]), batch_size=[7])
    transform = TrunkFeatures(trunk, ["front"], SIZE, num_views=1)  # view 0: unshifted, deterministic
    out = transform.encode_transitions(data.clone(), chunk=chunk)
    with torch.no_grad():
        expected = trunk(frames).half()
    torch.testing.assert_close(out["front_features"][:, 0], expected[rows], atol=2e-2, rtol=2e-3)
    torch.testing.assert_close(out["next", "front_features"][:, 0], expected[next_rows], atol=2e-2, rtol=2e-3)
    # the next frame of an episode's step (not its last) is exactly the next row's features
    assert torch.equal(out["next", "front_features"][:3], out["front_features"][1:4])


def test_frame_dedup_buffer_stores_each_frames_features_once(tmp_path):
    t, feat = 10, (2, 8, 2, 2)
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(t + 1, *feat, generator=g).half()
    data = TensorDict(
        front_features=frames[:-1], action=torch.zeros(t, 4),
        next=TensorDict(front_features=frames[1:], done=torch.zeros(t, 1, dtype=torch.bool), batch_size=[t]),
        batch_size=[t],
    )
    buffer = FrameDedupReplayBuffer(64, ["front_features"], tmp_path / "rb", batch_size=4)
    buffer.extend(data)
    assert len(buffer) == t + 1  # t rows + one tail row: each frame's features stored once
    sample = buffer.sample()
    assert sample["front_features"].dtype == torch.float16
    with pytest.raises(TypeError, match="float16"):
        buffer.extend(data.apply(lambda x: x.float() if x.dtype == torch.float16 else x))


def test_cached_loss_runs_under_bf16_autocast():
    actor, qvalue, encoder = make_drq_networks(image_size=SIZE, num_critics=2, hidden=(16, 16))
    loss = DrQLoss(actor, qvalue, encoder, cached_features=True)
    loss.make_value_estimator(gamma=0.96)
    batch = _batch(encoder, cached=True)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = loss(batch.clone())
    torch.manual_seed(0)
    full = loss(batch.clone())
    assert torch.isfinite(low["loss_qvalue"]) and low["loss_qvalue"].dtype == torch.float32
    torch.testing.assert_close(low["loss_qvalue"], full["loss_qvalue"], rtol=0.15, atol=0.05)


def test_compiled_trunk_features_match_eager_and_are_compiled_where_the_env_steps():
    import copy
    import pickle

    trunk = resnet10(num_filters=8).eval()
    td = TensorDict(front=images(1, 0)[0], wrist=images(1, 1)[0])
    eager = TrunkFeatures(trunk, ("front", "wrist"), SIZE, num_views=2, seed=0)
    compiled = TrunkFeatures(copy.deepcopy(trunk), ("front", "wrist"), SIZE, num_views=2, seed=0, compile_trunk=True)
    shipped = pickle.loads(pickle.dumps(compiled))  # what a collector process receives: nothing compiled yet
    assert shipped._compiled_trunk is None and shipped.compile_trunk
    for _ in range(2):  # the same shifts (same seed), the same math
        expected, got = eager._call(td.clone()), compiled._call(td.clone())
        for key in (feature_key("front"), feature_key("wrist")):
            torch.testing.assert_close(got[key].float(), expected[key].float(), atol=2e-2, rtol=2e-3)
    assert compiled._compiled_trunk is not None
    assert pickle.loads(pickle.dumps(compiled))._compiled_trunk is None  # never pickled: compiled per process
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # no extra module in the state
