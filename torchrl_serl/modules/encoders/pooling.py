"""Poolings that turn a trunk feature map ``[N, C, H, W]`` into a vector (SERL's ``vision/spatial.py``)."""

from __future__ import annotations

import math

import torch
from torch import nn


class SpatialLearnedEmbeddings(nn.Module):
    """SERL's learned spatial embeddings: ``F`` learned ``[H, W]`` weightings per channel.

    ``out[n, c * F + f] = sum_{h, w} x[n, c, h, w] * kernel[c, h, w, f]``; output ``[N, C * F]``
    (SERL: ``F = 8``, so ``[N, 4096]`` for ResNet-10 on 128x128 images). Kernel init is Flax's
    ``lecun_normal`` with SERL's fan-in ``H * W * C``.
    """

    def __init__(self, channels: int, height: int, width: int, num_features: int = 8):
        super().__init__()
        if min(channels, height, width, num_features) < 1:
            raise ValueError(
                f"channels, height, width, num_features must be >= 1, got {channels, height, width, num_features}"
            )
        self.kernel = nn.Parameter(torch.empty(channels, height * width, num_features))
        std = math.sqrt(1.0 / (channels * height * width)) / 0.87962566103423978
        nn.init.trunc_normal_(self.kernel, std=std, a=-2 * std, b=2 * std)
        self.shape = (channels, height, width)
        self.out_features = channels * num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if (c, h, w) != self.shape:
            raise ValueError(f"SpatialLearnedEmbeddings built for feature maps {self.shape}, got {(c, h, w)}")
        # One batched matmul over channels: [C, N, HW] @ [C, HW, F] -> [C, N, F]. The operand is
        # made contiguous first: a strided one sends CPU bmm (and its backward) down a per-channel
        # loop of copies, ~2x slower at N=256 (benchmarks/README.md); the result is the same.
        out = torch.bmm(x.reshape(n, c, h * w).transpose(0, 1).contiguous(), self.kernel)
        return out.transpose(0, 1).reshape(n, self.out_features)


class SpatialSoftmax(nn.Module):
    """Expected image coordinates of each channel's softmax attention (keypoints).

    ``p = softmax(x[n, c] / T)`` over the ``H * W`` grid; output ``[N, 2 * C]`` =
    ``[E_p[x] for every c, E_p[y] for every c]`` with ``x`` (column) and ``y`` (row) in ``[-1, 1]``,
    SERL's ordering. ``num_keypoints`` adds SERL's bias-free 1x1 conv ``C -> K`` first;
    ``learn_temperature`` makes ``T`` a parameter (init 1).
    """

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        num_keypoints: int | None = None,
        temperature: float = 1.0,
        learn_temperature: bool = False,
    ):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.keypoint_conv = None if num_keypoints is None else nn.Conv2d(channels, num_keypoints, 1, bias=False)
        k = channels if num_keypoints is None else num_keypoints
        t = torch.tensor(float(temperature))
        if learn_temperature:
            self.temperature = nn.Parameter(t)
        else:
            self.register_buffer("temperature", t)
        ys = torch.linspace(-1.0, 1.0, height) if height > 1 else torch.zeros(1)
        xs = torch.linspace(-1.0, 1.0, width) if width > 1 else torch.zeros(1)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        self.register_buffer("pos", torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], -1), persistent=False)
        self.shape = (channels, height, width)
        self.out_features = 2 * k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if (c, h, w) != self.shape:
            raise ValueError(f"SpatialSoftmax built for feature maps {self.shape}, got {(c, h, w)}")
        if self.keypoint_conv is not None:
            x = self.keypoint_conv(x)
        attention = torch.softmax(x.reshape(n, x.shape[1], h * w) / self.temperature, dim=-1)
        expected = attention @ self.pos  # [N, K, 2]
        return expected.transpose(1, 2).reshape(n, self.out_features)


class AvgPool(nn.Module):
    """Global average over the spatial grid: ``[N, C, H, W] -> [N, C]``."""

    def __init__(self, channels: int, height: int = 1, width: int = 1):
        super().__init__()
        self.out_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


POOLINGS = {
    "spatial_learned_embeddings": SpatialLearnedEmbeddings,
    "spatial_softmax": SpatialSoftmax,
    "avg": AvgPool,
}


def make_pooling(name: str, channels: int, height: int, width: int, **kwargs) -> nn.Module:
    """Build a pooling by SERL's name (``spatial_learned_embeddings``, ``spatial_softmax``, ``avg``)."""
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; choose one of {sorted(POOLINGS)}")
    return POOLINGS[name](channels, height, width, **kwargs)
