"""USB/V4L2 cameras (and video files) through OpenCV."""
from __future__ import annotations

import numpy as np

from .base import Camera


class OpenCVCamera(Camera):
    """``cv2.VideoCapture`` source returning RGB frames.

    Args:
        source: device index (``0``), device path or video file.
        height, width, fps: requested capture settings (the driver may pick others).
    """

    def __init__(self, source: int | str = 0, height: int | None = None, width: int | None = None,
                 fps: float | None = None):
        try:
            import cv2
        except ImportError as err:  # pragma: no cover - depends on the extra being installed
            raise ImportError("OpenCVCamera needs opencv-python-headless (the [robots] extra)") from err
        self._cv2 = cv2
        self._cap = cv2.VideoCapture(source)
        if not self._cap.isOpened():
            raise RuntimeError(f"OpenCV could not open camera source {source!r}")
        for prop, value in ((cv2.CAP_PROP_FRAME_HEIGHT, height), (cv2.CAP_PROP_FRAME_WIDTH, width),
                            (cv2.CAP_PROP_FPS, fps)):
            if value is not None:
                self._cap.set(prop, value)
        self.source = source

    def read(self) -> np.ndarray:
        ok, frame = self._cap.read()
        if not ok:
            raise RuntimeError(f"OpenCV camera {self.source!r} returned no frame (unplugged or end of file)")
        return self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._cap.release()
