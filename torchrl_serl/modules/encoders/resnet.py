"""ResNet-10 with GroupNorm: SERL's pretrained pixel trunk (``serl_launcher/vision/resnet_v1.py``).

Same layers, names mapped by :mod:`torchrl_serl.modules.encoders.flax_convert`, same padding
arithmetic as Flax's ``SAME`` (asymmetric for stride 2) so converted SERL weights give SERL's
features, and the same image normalisation (ImageNet mean/std). Channels first.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from torchrl_serl import precision

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Flax/XLA ``SAME`` padding (low, high) for one spatial dim; extra pixel goes to the high side."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _flax_kaiming_normal_(weight: torch.Tensor) -> torch.Tensor:
    """``jax.nn.initializers.kaiming_normal``: truncated normal (+-2 std), variance 2 / fan_in."""
    fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
    # 0.8796... is the std of a unit normal truncated to [-2, 2]; JAX divides it out.
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
    return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class SameConv2d(nn.Conv2d):
    """Bias-free conv with Flax ``SAME`` padding (asymmetric when the stride does not divide evenly)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=False)
        _flax_kaiming_normal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = _same_pads(x.shape[-2], k, s)
        left, right = _same_pads(x.shape[-1], k, s)
        if top == bottom and left == right:
            return F.conv2d(x, self.weight, None, s, (top, left))
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, None, s)


class BasicBlock(nn.Module):
    """SERL's ``ResNetBlock``: conv3x3-GN-ReLU-conv3x3-GN (+ 1x1 projection when the shape changes) then ReLU."""

    def __init__(self, in_channels: int, filters: int, stride: int, num_groups: int = 4):
        super().__init__()
        self.conv1 = SameConv2d(in_channels, filters, 3, stride)
        self.norm1 = nn.GroupNorm(num_groups, filters, eps=1e-5)
        self.conv2 = SameConv2d(filters, filters, 3, 1)
        self.norm2 = nn.GroupNorm(num_groups, filters, eps=1e-5)
        if stride != 1 or in_channels != filters:
            self.proj_conv = SameConv2d(in_channels, filters, 1, stride)
            self.proj_norm = nn.GroupNorm(num_groups, filters, eps=1e-5)
        else:
            self.proj_conv = None
            self.proj_norm = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        residual = x if self.proj_conv is None else self.proj_norm(self.proj_conv(x))
        return F.relu(residual + y)


def images_to_float(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` in [0, 255] (or float in [0, 1]) -> ImageNet-normalised float ``[N, 3, H, W]``."""
    if images.dtype == torch.uint8:
        x = images.float().div_(255.0)
    elif images.is_floating_point():
        x = images.float()
    else:
        raise TypeError(f"images must be uint8 in [0, 255] or float in [0, 1], got dtype {images.dtype}")
    return (x - mean) / std


class ResNetEncoder(nn.Module):
    """ResNet-v1 trunk with GroupNorm; returns the pre-pooling feature map.

    Input ``[N, 3, H, W]`` uint8 (or float in [0, 1]); output ``[N, 8 * num_filters, H / 32, W / 32]``
    (``[N, 512, 4, 4]`` for SERL's 128x128 images).

    Args:
        stage_sizes: blocks per stage; ``(1, 1, 1, 1)`` is ResNet-10.
        num_filters: width of the first stage (doubles each stage).
        num_groups: GroupNorm groups (SERL: 4).
        channels_last: run convolutions in channels-last memory format (faster on most CPUs/GPUs).
        bf16: run the trunk under bfloat16 autocast and return float32 features: ~2x faster on a
            CPU with AVX-512 BF16, features within ~1% of float32's (an option for a frozen trunk);
            much slower where bfloat16 is emulated (:mod:`torchrl_serl.precision`).
    """

    def __init__(
        self,
        stage_sizes: Sequence[int] = (1, 1, 1, 1),
        num_filters: int = 64,
        num_groups: int = 4,
        channels_last: bool = False,
        bf16: bool = False,
    ):
        super().__init__()
        if any(s < 1 for s in stage_sizes):
            raise ValueError(f"stage_sizes must be positive, got {tuple(stage_sizes)}")
        self.channels_last = channels_last
        self.bf16 = bf16
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.conv_init = nn.Conv2d(3, num_filters, 7, stride=2, padding=3, bias=False)
        _flax_kaiming_normal_(self.conv_init.weight)
        self.norm_init = nn.GroupNorm(num_groups, num_filters, eps=1e-5)
        blocks = []
        in_ch = num_filters
        for i, n_blocks in enumerate(stage_sizes):
            for j in range(n_blocks):
                filters = num_filters * 2**i
                blocks.append(BasicBlock(in_ch, filters, 2 if i > 0 and j == 0 else 1, num_groups))
                in_ch = filters
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = in_ch
        self.stage_sizes = tuple(stage_sizes)
        if channels_last:  # the weights too: a channels-first weight is reordered at every call
            self.to(memory_format=torch.channels_last)

    def output_shape(self, image_size: int) -> tuple[int, int, int]:
        """``(C, H, W)`` of the feature map for square ``image_size`` inputs."""
        s = math.ceil(image_size / 2)  # stem conv
        s = math.ceil(s / 2)  # SAME max-pool
        s = math.ceil(s / 2 ** (len(self.stage_sizes) - 1))
        return self.out_channels, s, s

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images_to_float(images, self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with bf16_autocast(x.device.type, self.bf16):
            x = F.relu(self.norm_init(self.conv_init(x)))
            top, bottom = _same_pads(x.shape[-2], 3, 2)
            left, right = _same_pads(x.shape[-1], 3, 2)
            x = F.max_pool2d(F.pad(x, (left, right, top, bottom), value=float("-inf")), 3, 2)
            x = self.blocks(x)
        return x.float() if self.bf16 else x


def bf16_autocast(device_type: str, enabled: bool):
    """``torch.autocast`` to bfloat16 when ``enabled`` (a warning where bfloat16 is emulated); a
    no-op context otherwise (an enclosing autocast, such as the learner's ``--bf16``, still applies)."""
    if enabled:
        precision.warn_if_emulated_bf16(device_type, "the trunk's bf16 (--drq.trunk_bf16)")
    return torch.autocast(device_type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def resnet10(num_filters: int = 64, channels_last: bool = False, bf16: bool = False) -> ResNetEncoder:
    """SERL's ``resnetv1-10`` trunk: 4.9 M parameters, ``[N, 512, 4, 4]`` features for 128x128 images."""
    return ResNetEncoder((1, 1, 1, 1), num_filters=num_filters, channels_last=channels_last, bf16=bf16)
