"""DrQ's random-shift augmentation as a tensor function (the env/buffer transform is
:class:`~torchrl_serl.envs.transforms.RandomShift`)."""

from __future__ import annotations

import torch


def random_shift(images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by an independent random offset in ``[-pad, pad]`` px, replicating edges.

    Equivalent to edge-padding by ``pad`` and random-cropping back to the input size, done as one
    gather (no per-sample loop, no padded copy), so it works on any dtype, uint8 included.

    Args:
        images: ``[*B, C, H, W]`` tensor (channels first), any dtype.
        pad: largest shift in pixels (SERL/DrQ: 4).
        generator: optional ``torch.Generator`` for reproducible shifts (drawn on its device).

    Returns:
        ``[*B, C, H, W]`` tensor of the same dtype and device.
    """
    if images.ndim < 3:
        raise ValueError(f"random_shift expects [*B, C, H, W] images, got shape {tuple(images.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if pad == 0:
        return images
    *batch, c, h, w = images.shape
    flat = images.reshape(-1, c, h, w)
    n = flat.shape[0]
    # drawn where the generator lives (the images' device without one: no host copy, so a CUDA
    # graph can record it)
    device = generator.device if generator is not None else images.device
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, device=device).to(images.device) - pad
    rows = (torch.arange(h, device=images.device) + shifts[:, :1]).clamp_(0, h - 1)  # [N, H]
    cols = (torch.arange(w, device=images.device) + shifts[:, 1:]).clamp_(0, w - 1)  # [N, W]
    index = rows[:, :, None] * w + cols[:, None, :]  # [N, H, W] flat pixel index per sample
    out = flat.reshape(n, c, h * w).gather(2, index.reshape(n, 1, h * w).expand(n, c, h * w))
    return out.reshape(*batch, c, h, w)
