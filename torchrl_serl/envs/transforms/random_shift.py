"""DrQ random-shift augmentation as a TorchRL transform (env observations or replay samples)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.envs.transforms import Transform

from torchrl_serl.modules.augmentation import random_shift

# Channel counts a channels-last image would show in its last dimension (gray, RGB, RGBA).
_PIXEL_CHANNELS = (1, 3, 4)


def check_image_layout(images: torch.Tensor, key: NestedKey = "image") -> None:
    """Raise a clear error unless ``images`` is a uint8/float ``[*B, C, H, W]`` (channels-first) tensor."""
    if images.ndim < 3:
        raise ValueError(
            f"{key!r}: expected a [*B, C, H, W] image tensor (at least 3 dims), got shape {tuple(images.shape)}"
        )
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"{key!r}: image dtype must be uint8 or floating point, got {images.dtype}")
    c, _, w = images.shape[-3:]
    if w in _PIXEL_CHANNELS and c not in _PIXEL_CHANNELS:
        raise ValueError(
            f"{key!r}: shape {tuple(images.shape)} looks channels-last [*B, H, W, C]; "
            f"expected channels-first [*B, C, H, W] (permute with PermuteTransform or .permute(..., -1, -3, -2))"
        )


class RandomShift(Transform):
    """DrQ random shift of camera images, independent per sample and per camera.

    Each image is edge-padded by ``pad`` px and cropped back to ``H x W`` at a uniformly random
    offset in ``[-pad, pad]^2`` (SERL/DrQ: ``pad=4``), vectorised over the whole batch. Specs are
    unchanged (same shape and dtype, uint8 stays uint8).

    On an env (``TransformedEnv``) the shift applies to the observations returned by ``reset`` and
    ``step``. On a replay-buffer sample (``rb.append_transform(RandomShift(...))``) it shifts the
    ``in_keys`` and, when present, their ``("next", key)`` counterparts, each with its own offset.

    Args:
        in_keys: image keys, ``uint8`` or float ``[*B, C, H, W]`` (e.g. ``["front", "wrist"]``).
        pad: largest shift in pixels, ``>= 0``.
        generator: CPU ``torch.Generator`` for reproducible shifts (default: global RNG).

    Example:
        >>> rb.append_transform(RandomShift(["front", "wrist"], pad=4, generator=torch.Generator().manual_seed(0)))
    """

    def __init__(self, in_keys: Sequence[NestedKey], pad: int = 4, generator: torch.Generator | None = None):
        if isinstance(in_keys, (str, tuple)):
            in_keys = [in_keys]
        if not in_keys:
            raise ValueError("RandomShift needs at least one image key in in_keys")
        if not isinstance(pad, int) or pad < 0:
            raise ValueError(f"pad must be an int >= 0, got {pad!r}")
        super().__init__(in_keys=list(in_keys), out_keys=list(in_keys))
        self.pad = pad
        self.generator = generator

    def _shift(self, images: torch.Tensor, key: NestedKey) -> torch.Tensor:
        check_image_layout(images, key)
        return random_shift(images, self.pad, self.generator)

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        for key in self.in_keys:
            images = next_tensordict.get(key, None)
            if images is None:
                if not self.missing_tolerance:
                    raise KeyError(f"RandomShift: image key {key!r} not found in {sorted(next_tensordict.keys(True))}")
                continue
            next_tensordict.set(key, self._shift(images, key))
        return next_tensordict

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        return self._call(tensordict_reset)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        present = tensordict.keys(True, True)
        for key in self.in_keys:
            if key not in present:
                raise KeyError(f"RandomShift: image key {key!r} not found in sample keys {sorted(map(str, present))}")
            next_key = ("next", *((key,) if isinstance(key, str) else key))
            for k in (key, next_key) if next_key in present else (key,):
                tensordict.set(k, self._shift(tensordict.get(k), k))
        return tensordict

    def get_extra_state(self) -> dict:
        # The generator state travels with state_dict so that a restored buffer/run shifts identically.
        return {"generator_state": self.generator.get_state() if self.generator is not None else None}

    def set_extra_state(self, state: dict) -> None:
        if state["generator_state"] is not None:
            if self.generator is None:
                self.generator = torch.Generator()
            self.generator.set_state(state["generator_state"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(in_keys={self.in_keys}, pad={self.pad})"
