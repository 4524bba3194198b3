"""Deterministic synthetic frames for tests and dry runs without cameras."""
from __future__ import annotations

import time

import numpy as np

from .base import Camera


class TestPatternCamera(Camera):
    """Moving colour gradient: frame ``k`` is a pure function of ``(k, seed)``.

    Args:
        height, width: frame size [px].
        fps: frames per second ``read()`` paces itself to; ``None`` returns at once.
        seed: shifts the pattern so two cameras differ.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, height: int = 480, width: int = 640, fps: float | None = 30.0, seed: int = 0):
        if height <= 0 or width <= 0:
            raise ValueError(f"frame size ({height}, {width}) must be positive")
        self.height, self.width, self.fps, self.seed = height, width, fps, seed
        self.frame_index = 0
        self._next_t = time.monotonic()
        yy, xx = np.mgrid[0:height, 0:width]
        self._base = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1),
                               (xx + yy) * 255 // max(1, width + height - 2)], axis=-1).astype(np.uint8)

    def frame(self, k: int) -> np.ndarray:
        """The ``k``-th frame ``[H, W, 3]`` uint8."""
        # uint8 addition wraps modulo 256: one pass over the frame, as cheap as a real camera's copy
        return self._base + np.uint8((7 * k + 40 * self.seed) % 256)

    def read(self) -> np.ndarray:
        if self.fps:
            self._next_t += 1.0 / self.fps
            time.sleep(max(0.0, self._next_t - time.monotonic()))
        out = self.frame(self.frame_index)
        self.frame_index += 1
        return out
