"""Camera interface and the crop/resize every source shares."""
from __future__ import annotations

import abc

import numpy as np


def crop_resize(frame: np.ndarray, size: tuple[int, int], crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Crop then resize an image to the policy's size.

    Args:
        frame: ``[H, W, 3]`` uint8 RGB.
        size: output ``(height, width)`` [px].
        crop: optional ``(top, left, height, width)`` [px] region taken before resizing.

    Returns:
        ``[size[0], size[1], 3]`` uint8.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 frame, got shape {frame.shape} dtype {frame.dtype}")
    if crop is not None:
        top, left, h, w = crop
        if top < 0 or left < 0 or h <= 0 or w <= 0 or top + h > frame.shape[0] or left + w > frame.shape[1]:
            raise ValueError(f"crop {crop} (top, left, height, width) does not fit a {frame.shape[:2]} frame")
        frame = frame[top: top + h, left: left + w]
    if frame.shape[:2] == tuple(size):
        return np.ascontiguousarray(frame)
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - depends on the extra being installed
        raise ImportError("resizing camera frames needs opencv-python-headless (the [robots] extra)") from err
    # INTER_AREA averages source pixels: no aliasing when shrinking a 640x480 frame to 128x128.
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)


class Camera(abc.ABC):
    """A source of RGB frames. ``read()`` blocks until the next frame."""

    @abc.abstractmethod
    def read(self) -> np.ndarray:
        """Next frame ``[H, W, 3]`` uint8 RGB."""

    def close(self) -> None:
        """Release the device."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
