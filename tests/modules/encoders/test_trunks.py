import pytest
import torch

from torchrl_serl.modules.encoders import MobileNetV3SmallEncoder, SmallConvEncoder, resnet10
from torchrl_serl.modules.encoders.resnet import SameConv2d


def _resnet10_param_count() -> int:
    # SERL resnetv1-10: 7x7 stem, GroupNorm scale+bias, one BasicBlock per stage, 1x1 projections.
    n = 7 * 7 * 3 * 64 + 2 * 64
    c_in = 64
    for c in (64, 128, 256, 512):
        n += 9 * c_in * c + 9 * c * c + 4 * c
        if c != c_in:
            n += c_in * c + 2 * c
        c_in = c
    return n


def test_resnet10_matches_serl_shapes_and_params():
    trunk = resnet10()
    assert sum(p.numel() for p in trunk.parameters()) == _resnet10_param_count() == 4_905_792
    out = trunk(torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8))
    assert out.shape == (2, 512, 4, 4) and trunk.output_shape(128) == (512, 4, 4)
    norms = [m for m in trunk.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 1 + 2 * 4 + 3 and all(m.num_groups == 4 and m.eps == 1e-5 for m in norms)


def test_resnet_imagenet_normalisation():
    trunk = resnet10()
    mean_img = (torch.tensor([0.485, 0.456, 0.406]) * 255).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    # An image equal to the ImageNet mean normalises to zero, so the stem conv outputs zero.
    x = (mean_img / 255 - trunk.mean) / trunk.std
    assert x.abs().max() < 1e-6
    assert torch.allclose(trunk(mean_img.round().to(torch.uint8)), trunk(mean_img.round() / 255), atol=1e-5)


def test_same_conv_pads_like_flax_for_stride_two():
    # Flax SAME on an even input with stride 2 pads only the bottom/right, so a kernel that picks
    # its top-left tap reads x[2i, 2j]; PyTorch's symmetric padding=1 would read x[2i-1, 2j-1].
    conv = SameConv2d(1, 1, 3, stride=2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0
    x = torch.arange(64.0).view(1, 1, 8, 8)
    assert torch.equal(conv(x)[0, 0], x[0, 0, ::2, ::2])


def test_resnet_maxpool_is_flax_same():
    trunk = resnet10()
    # Probe the pooling alone: 3x3 stride-2 SAME windows start at row/col 0 (extra pad at the end).
    x = torch.arange(16.0).view(1, 1, 4, 4)
    from torchrl_serl.modules.encoders.resnet import _same_pads

    assert _same_pads(4, 3, 2) == (0, 1) and _same_pads(7, 3, 2) == (1, 1)
    pooled = torch.nn.functional.max_pool2d(torch.nn.functional.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)
    assert pooled.flatten().tolist() == [10.0, 11.0, 14.0, 15.0]
    assert trunk.output_shape(64) == tuple(trunk(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape[1:])


def test_small_conv_is_serl_small_encoder():
    trunk = SmallConvEncoder()
    assert [c.out_channels for c in trunk.convs] == [32, 64, 128, 256]
    assert all(c.stride == (2, 2) and c.padding == (0, 0) for c in trunk.convs)
    assert trunk(torch.zeros(3, 3, 128, 128, dtype=torch.uint8)).shape == (3, 256, 7, 7)
    with pytest.raises(ValueError, match="too small"):
        trunk.output_shape(8)


def test_mobilenet_never_downloads_and_loads_local(tmp_path):
    trunk = MobileNetV3SmallEncoder()
    assert trunk(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape == (1, 576, 2, 2)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        MobileNetV3SmallEncoder(weights_path=tmp_path / "missing.pth")
    from torchvision.models import mobilenet_v3_small

    full = mobilenet_v3_small(weights=None)
    torch.save(full.state_dict(), tmp_path / "mnv3.pth")
    loaded = MobileNetV3SmallEncoder(weights_path=tmp_path / "mnv3.pth")
    assert torch.equal(loaded.features[0][0].weight, full.features[0][0].weight)


def test_trunks_reject_bad_dtype():
    with pytest.raises(TypeError, match="uint8"):
        resnet10()(torch.zeros(1, 3, 32, 32, dtype=torch.int32))


def test_channels_last_trunk_gives_the_same_features():
    trunk = resnet10()
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    expected = trunk(x)
    trunk.channels_last = True
    torch.testing.assert_close(trunk(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", [resnet10, MobileNetV3SmallEncoder], ids=["resnet10", "mobilenet"])
def test_bf16_trunk_gives_float32_features_close_to_float32(make):
    torch.manual_seed(0)
    trunk = make().eval()
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        expected = trunk(x)
        trunk.bf16 = True
        got = trunk(x)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    rel = ((got - expected).norm() / expected.norm()).item()
    assert 1e-5 < rel < 0.03, rel  # it did compute in bf16, and stayed within a few percent


def test_trunk_bf16_is_for_frozen_trunks_only():
    from torchrl_serl.modules.pixel_encoder import make_trunk

    assert make_trunk("resnet10", channels_last=True, bf16=True).bf16
    with pytest.raises(ValueError, match="trained"):
        make_trunk("small", bf16=True)
