"""torchvision MobileNetV3-small feature trunk (SERL's MobileNet alternative), never downloaded."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torchvision.models import mobilenet_v3_small

from torchrl_serl.modules.encoders.resnet import IMAGENET_MEAN, IMAGENET_STD, bf16_autocast, images_to_float


class MobileNetV3SmallEncoder(nn.Module):
    """MobileNetV3-small ``features`` (no classifier); returns the pre-pooling feature map.

    Built with ``weights=None``: pretrained ImageNet weights come only from a local file the user
    names (``weights_path``, a torchvision ``state_dict`` of the full model or of ``features``).
    Input ``[N, 3, H, W]`` uint8 (or float in [0, 1]); output ``[N, 576, H / 32, W / 32]``.
    ``channels_last`` and ``bf16`` as :class:`~torchrl_serl.modules.encoders.resnet.ResNetEncoder`'s.
    """

    def __init__(self, weights_path: str | Path | None = None, channels_last: bool = False, bf16: bool = False):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.features = mobilenet_v3_small(weights=None).features
        self.out_channels = 576
        self.channels_last = channels_last
        self.bf16 = bf16
        if weights_path is not None:
            self.load_torchvision_weights(weights_path)
        if channels_last:  # the weights too: a channels-first weight is reordered at every call
            self.to(memory_format=torch.channels_last)

    def load_torchvision_weights(self, path: str | Path) -> None:
        """Load a local torchvision MobileNetV3-small checkpoint (full model or ``features`` only)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"MobileNetV3 weights file not found: {path} (nothing is downloaded)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        self.features.load_state_dict(feats or state)

    def output_shape(self, image_size: int) -> tuple[int, int, int]:
        """``(C, H, W)`` of the feature map for square ``image_size`` inputs (5 stride-2 stages)."""
        s = image_size
        for _ in range(5):
            s = math.ceil(s / 2)
        return self.out_channels, s, s

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images_to_float(images, self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with bf16_autocast(x.device.type, self.bf16):
            x = self.features(x)
        return x.float() if self.bf16 else x
