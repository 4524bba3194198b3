import pytest
import torch
from tensordict import TensorDict

from torchrl_serl.modules.encoders import MobileNetV3SmallEncoder, MultiCameraEncoder, SmallConvEncoder, resnet10


def _batch(b=4, size=32, proprio=7):
    return TensorDict(
        front=torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8),
        wrist=torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8),
        observation=torch.randn(b, proprio),
        batch_size=[b],
    )


def _count_calls(module):
    calls = []
    module.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    return calls


def test_embedding_shape_and_serl_head():
    enc = MultiCameraEncoder(resnet10(), image_size=128)
    # Per camera: 512*8 learned embeddings -> Linear 256 -> LayerNorm -> tanh; plus raw 7-D state.
    head = enc.heads["front"]
    assert [type(m).__name__ for m in head] == ["SpatialLearnedEmbeddings", "Linear", "LayerNorm", "Tanh"]
    assert head[1].in_features == 4096 and head[1].out_features == 256
    td = enc(_batch(b=2, size=128))
    assert td["embedding"].shape == (2, 2 * 256 + 7) == (2, enc.out_features)
    assert td["embedding"][:, :512].abs().max() <= 1.0
    assert torch.equal(td["embedding"][:, 512:], td["observation"])


def test_shared_frozen_trunk_runs_once_for_all_cameras_without_grad():
    trunk = resnet10()
    calls = _count_calls(trunk)
    enc = MultiCameraEncoder(trunk, image_size=32)
    td = _batch(b=3)
    feats = enc.encode_images(td)
    assert calls == [6]  # both cameras, one call
    assert feats["front"].shape == (3, 512, 1, 1) and not feats["front"].requires_grad
    emb = enc.forward_features(feats, td["observation"])
    emb.sum().backward()
    assert all(p.grad is None for p in enc.trunk_parameters())
    assert all(p.grad is not None for p in enc.head_parameters())
    assert sum(p.numel() for p in enc.trunk_parameters()) == 4_905_792  # shared: counted once


def test_separate_trainable_trunks_and_extra_batch_dims():
    trunks = {"front": SmallConvEncoder(), "wrist": SmallConvEncoder()}
    counts = [_count_calls(trunks["front"]), _count_calls(trunks["wrist"])]
    enc = MultiCameraEncoder(trunks, image_size=32, pooling="avg", freeze_trunk=False, proprio_latent_dim=16)
    td = _batch(b=6).reshape(2, 3)
    out = enc(td)["embedding"]
    assert out.shape == (2, 3, 2 * 256 + 16)
    assert counts == [[6], [6]]
    out.sum().backward()
    assert trunks["front"].convs[0].weight.grad is not None


def test_frozen_trunk_stays_in_eval_mode():
    enc = MultiCameraEncoder(MobileNetV3SmallEncoder(), camera_keys=("front",), image_size=32, pooling="spatial_softmax")
    enc.train()
    assert not enc.trunks.training and enc.heads.training
    bn = next(m for m in enc.trunks.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    enc(_batch(b=2))
    assert torch.equal(bn.running_mean, before)


def test_bad_inputs_name_the_problem():
    enc = MultiCameraEncoder(SmallConvEncoder(), image_size=32)
    td = _batch()
    with pytest.raises(KeyError, match="'wrist'"):
        enc(td.exclude("wrist"))
    with pytest.raises(ValueError, match=r"\[\*B, 3, 32, 32\].*\(4, 32, 32, 3\)"):
        enc(td.set("front", td["front"].permute(0, 2, 3, 1)))
    td = _batch()
    with pytest.raises(TypeError, match="int64"):
        enc(td.set("front", td["front"].long()))
    with pytest.raises(ValueError, match=r"\[\*B, 7\].*\(4, 10\)"):
        enc(_batch(proprio=10))
    with pytest.raises(ValueError, match="trunk mapping keys"):
        MultiCameraEncoder({"front": SmallConvEncoder()}, image_size=32)
