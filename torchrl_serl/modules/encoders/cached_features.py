"""Encode once: a frozen trunk's features of ``K`` random-shift views per frame, cached in the buffer.

With a frozen trunk (SERL's ResNet-10) the learner's trunk calls recompute the same function of the
same frames at every update. Encoding each frame once, when it enters the buffer, as ``K`` views
(view 0 unshifted, views ``1..K-1`` randomly shifted by up to ``pad`` px) turns a learner step into
the state learner's plus the small trainable head. This replaces SERL's fresh shift at every
update by a draw among ``K`` cached shifts: an option (``DrQLoss(cached_features=True)``), not
SERL's exact algorithm.

- :func:`encode_views` ``uint8 [*B, 3, H, W] -> [*B, K, C, h, w]`` (``float16`` by default),
- :func:`feature_key` names the cached entry of a camera (``"front"`` -> ``"front_features"``),
- :class:`CachedFeaturesEncoder` is the acting-side encoder: it reads view 0 of each camera's
  cached features and writes the embedding with the shared encoder's head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn

from torchrl_serl.modules.augmentation import random_shift
from torchrl_serl.modules.encoders.multi_camera import MultiCameraEncoder

FEATURE_SUFFIX = "_features"


def feature_key(camera_key: str) -> str:
    """Key of ``camera_key``'s cached trunk features (``"front"`` -> ``"front_features"``)."""
    return f"{camera_key}{FEATURE_SUFFIX}"


@torch.no_grad()
def encode_views(
    trunk: nn.Module,
    images: torch.Tensor,
    num_views: int,
    pad: int = 4,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float16,
    chunk: int | None = None,
) -> torch.Tensor:
    """Trunk features of ``num_views`` views of each image, in one trunk call (or one per ``chunk``).

    Args:
        trunk: frozen image trunk, uint8 ``[N, 3, H, W] -> [N, C, h, w]``.
        images: uint8 ``[*B, 3, H, W]``.
        num_views: ``K >= 1``; view 0 is the unshifted image, views ``1..K-1`` are randomly
            shifted by up to ``pad`` px (edge replicate, DrQ's augmentation).
        pad: shift range in px (SERL: 4).
        generator: optional ``torch.Generator`` for the shifts.
        dtype: storage dtype of the features (``float16``: half the bytes of float32).
        chunk: at most this many images per trunk call (``None``: all in one call). Small chunks
            are faster on a CPU (smaller activations; ResNet-10, 128 px, 2 views, 1 thread on a
            Zen 3: ~53 ms per image at 8, ~94 ms at 256); the shifts are drawn chunk by chunk.

    Returns:
        ``[*B, K, C, h, w]`` features of ``dtype``, contiguous.
    """
    if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 1:
        raise ValueError(f"num_views must be an int >= 1, got {num_views!r}")
    if images.ndim < 4 or images.shape[-3] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 [*B, 3, H, W], got {images.dtype} {tuple(images.shape)}")
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be >= 1 or None, got {chunk!r}")
    batch = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:])
    if chunk is not None and flat.shape[0] > chunk:
        feats = torch.cat([encode_views(trunk, part, num_views, pad, generator, dtype) for part in flat.split(chunk)])
        return feats.reshape(*batch, *feats.shape[1:])
    views = flat.unsqueeze(1).expand(-1, num_views, *flat.shape[1:])
    if num_views > 1:
        shifted = random_shift(views[:, 1:], pad, generator)
        views = torch.cat([views[:, :1], shifted], 1)
    feats = trunk(views.reshape(-1, *flat.shape[1:]))
    # contiguous [*B, K, C, h, w] whatever the trunk's memory format: what a buffer stores, and
    # the layout the learner's spatial embeddings read fastest
    feats = feats.to(dtype, memory_format=torch.contiguous_format)
    return feats.reshape(*batch, num_views, *feats.shape[1:])


class CachedFeaturesEncoder(TensorDictModuleBase):
    """The acting half of a cached-feature encoder: view 0 (unshifted) of each camera's cached
    trunk features -> ``encoder``'s head -> ``embedding`` ``[*B, E]``.

    Shares its head parameters with ``encoder`` (the learner's encoder); the trunk is not run.

    Args:
        encoder: the :class:`MultiCameraEncoder` (frozen trunk) whose head this runs.
    """

    def __init__(self, encoder: MultiCameraEncoder):
        super().__init__()
        if not encoder.freeze_trunk:
            raise ValueError("cached trunk features need a frozen trunk (MultiCameraEncoder(freeze_trunk=True))")
        self.encoder = encoder
        self.feature_keys = [feature_key(k) for k in encoder.camera_keys]
        self.in_keys = self.feature_keys + ([encoder.proprio_key] if encoder.proprio_key is not None else [])
        self.out_keys = [encoder.out_key]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        enc = self.encoder
        feats = {}
        for cam, key in zip(enc.camera_keys, self.feature_keys):
            f = tensordict.get(key, None)
            if f is None:
                raise KeyError(f"CachedFeaturesEncoder needs {key!r} (TrunkFeatures on the env); "
                               f"tensordict has {sorted(map(str, tensordict.keys(True)))}")
            feats[cam] = f[..., 0, :, :, :].float()
        batch = feats[enc.camera_keys[0]].shape[:-3]
        state = tensordict.get(enc.proprio_key) if enc.proprio_key is not None else None
        emb = enc.forward_features(TensorDict(feats, batch_size=batch), state)
        return tensordict.set(enc.out_key, emb)


def select_views(features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One uniformly drawn view per sample: ``[*B, K, C, h, w] -> [*B, C, h, w]``, in the stored dtype."""
    *batch, k = features.shape[:-3]
    if k == 1:  # nothing to draw (and no random numbers consumed)
        picked = features[..., 0, :, :, :]
    else:
        flat = features.reshape(-1, k, *features.shape[-3:])
        device = generator.device if generator is not None else features.device
        idx = torch.randint(0, k, (flat.shape[0],), generator=generator, device=device).to(features.device)
        picked = flat[torch.arange(flat.shape[0], device=features.device), idx].reshape(*batch, *features.shape[-3:])
    return picked


def stack_channel_major(features: Sequence[torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``S`` feature batches ``[B, C, h, w]`` stacked as ``[S, B, C, h, w]`` of ``dtype``, laid out
    ``[S, C, B, h, w]`` in memory (one copy of each, no ``torch.stack``, which CPU autocast refuses
    on float16): the same values, in the layout of the operand that SERL's spatial embeddings
    multiply per channel (``[C, B, h * w]``), so each head call on them (the critic's on obs, the
    actor's and the target's on next obs) reads it without a copy of its own."""
    b, c, h, w = features[0].shape
    out = torch.empty((len(features), c, b, h, w), dtype=dtype, device=features[0].device)
    for dst, src in zip(out, features):
        dst.copy_(src.transpose(0, 1))
    return out.transpose(1, 2)


__all__ = ["CachedFeaturesEncoder", "encode_views", "feature_key", "select_views", "stack_channel_major"]
