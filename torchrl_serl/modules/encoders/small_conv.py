"""SERL's small conv trunk (``serl_launcher/vision/small_encoders.py``, ``encoder_type="small"``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SmallConvEncoder(nn.Module):
    """Conv-ReLU stack trained from scratch; returns the pre-pooling feature map.

    SERL's DrQ ``"small"`` setting: 4 layers ``(32, 64, 128, 256)`` channels, 3x3 kernels, stride 2,
    ``VALID`` padding, images scaled to [0, 1] (no ImageNet normalisation). Input ``[N, 3, H, W]``
    uint8 (or float in [0, 1]); output ``[N, features[-1], h, w]`` (``[N, 256, 7, 7]`` for 128x128).
    """

    def __init__(
        self,
        features: Sequence[int] = (32, 64, 128, 256),
        kernel_sizes: Sequence[int] = (3, 3, 3, 3),
        strides: Sequence[int] = (2, 2, 2, 2),
        in_channels: int = 3,
    ):
        super().__init__()
        if not (len(features) == len(kernel_sizes) == len(strides)) or not features:
            raise ValueError(
                f"features, kernel_sizes, strides must be non-empty and the same length, got "
                f"{len(features)}, {len(kernel_sizes)}, {len(strides)}"
            )
        layers = []
        ch = in_channels
        for f, k, s in zip(features, kernel_sizes, strides):
            layers.append(nn.Conv2d(ch, f, k, stride=s))
            ch = f
        self.convs = nn.ModuleList(layers)
        self.out_channels = ch

    def output_shape(self, image_size: int) -> tuple[int, int, int]:
        """``(C, H, W)`` of the feature map for square ``image_size`` inputs (VALID padding)."""
        s = image_size
        for conv in self.convs:
            s = math.floor((s - conv.kernel_size[0]) / conv.stride[0]) + 1
        if s < 1:
            raise ValueError(f"image_size {image_size} is too small for {len(self.convs)} stride-2 convs")
        return self.out_channels, s, s

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            x = images.float().div_(255.0)
        elif images.is_floating_point():
            x = images.float()
        else:
            raise TypeError(f"images must be uint8 in [0, 255] or float in [0, 1], got dtype {images.dtype}")
        for conv in self.convs:
            x = F.relu(conv(x))
        return x
