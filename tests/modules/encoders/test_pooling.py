import pytest
import torch

from torchrl_serl.modules.encoders import AvgPool, SpatialLearnedEmbeddings, SpatialSoftmax, make_pooling


def test_spatial_softmax_expected_coordinates():
    pool = SpatialSoftmax(channels=2, height=3, width=5)
    x = torch.zeros(1, 2, 3, 5)
    x[0, 0, 0, 4] = 100.0  # channel 0 peaks at top-right: x=+1 (last column), y=-1 (first row)
    x[0, 1, 2, 0] = 100.0  # channel 1 peaks at bottom-left: x=-1, y=+1
    out = pool(x)
    # SERL's ordering: [x for every channel, then y for every channel].
    assert torch.allclose(out, torch.tensor([[1.0, -1.0, -1.0, 1.0]]), atol=1e-4)
    # A flat map attends uniformly: expected coordinates are the grid centre.
    assert torch.allclose(pool(torch.zeros(1, 2, 3, 5)), torch.zeros(1, 4), atol=1e-6)


def test_spatial_softmax_hand_computed_two_pixels():
    pool = SpatialSoftmax(channels=1, height=1, width=2, temperature=0.5)
    x = torch.tensor([[[[0.0, 1.0]]]])
    p1 = torch.softmax(torch.tensor([0.0, 2.0]), 0)[1]  # logits / T
    expected_x = -1.0 * (1 - p1) + 1.0 * p1
    assert torch.allclose(pool(x), torch.tensor([[expected_x, 0.0]]), atol=1e-6)


def test_spatial_softmax_keypoints_and_learned_temperature():
    pool = SpatialSoftmax(channels=8, height=4, width=4, num_keypoints=3, learn_temperature=True)
    out = pool(torch.randn(2, 8, 4, 4))
    assert out.shape == (2, 6) and pool.out_features == 6
    out.sum().backward()
    assert pool.temperature.grad is not None
    with pytest.raises(ValueError, match="temperature"):
        SpatialSoftmax(1, 2, 2, temperature=0.0)


def test_spatial_learned_embeddings_math():
    pool = SpatialLearnedEmbeddings(channels=3, height=2, width=2, num_features=4)
    x = torch.randn(5, 3, 2, 2)
    kernel = pool.kernel.detach().view(3, 2, 2, 4)
    expected = torch.zeros(5, 3, 4)
    for n in range(5):
        for c in range(3):
            for f in range(4):
                expected[n, c, f] = (x[n, c] * kernel[c, :, :, f]).sum()
    assert torch.allclose(pool(x), expected.reshape(5, 12), atol=1e-5)
    # SERL's resnet10 + 8 features on 128x128 images: 512 * 8 = 4096 outputs, 4*4*512*8 params.
    serl = SpatialLearnedEmbeddings(512, 4, 4, 8)
    assert serl.out_features == 4096 and serl.kernel.numel() == 65536
    with pytest.raises(ValueError, match=r"\(3, 2, 2\)"):
        pool(torch.randn(1, 3, 3, 3))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_spatial_learned_embeddings_gradients_match_einsum(memory_format):
    pool = SpatialLearnedEmbeddings(channels=6, height=3, width=2, num_features=4)
    x = torch.randn(7, 6, 3, 2).contiguous(memory_format=memory_format).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    kernel_ref = pool.kernel.detach().clone().requires_grad_()
    weights = torch.randn(7, 24)
    (pool(x) * weights).sum().backward()
    expected = torch.einsum("nck,ckf->ncf", x_ref.reshape(7, 6, 6), kernel_ref).reshape(7, 24)
    (expected * weights).sum().backward()
    assert torch.allclose(pool.kernel.grad, kernel_ref.grad, atol=1e-5)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)


def test_avg_pool_and_factory():
    x = torch.arange(8.0).view(1, 2, 2, 2)
    assert torch.equal(AvgPool(2)(x), torch.tensor([[1.5, 5.5]]))
    assert isinstance(make_pooling("avg", 2, 2, 2), AvgPool)
    with pytest.raises(ValueError, match="unknown pooling 'max2'"):
        make_pooling("max2", 2, 2, 2)
