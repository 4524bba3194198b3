"""Intel RealSense colour stream through the optional ``pyrealsense2``."""
from __future__ import annotations

import numpy as np

from .base import Camera


class RealSenseCamera(Camera):
    """RGB stream of one RealSense camera.

    Args:
        serial: device serial number; ``None`` takes the first camera found.
        height, width, fps: colour stream mode (must be one the camera supports).
    """

    def __init__(self, serial: str | None = None, height: int = 480, width: int = 640, fps: int = 30):
        try:
            import pyrealsense2 as rs
        except ImportError as err:
            raise ImportError(
                "RealSenseCamera needs pyrealsense2: pip install 'torchrl-serl[realsense]'"
            ) from err
        self._pipeline = rs.pipeline()
        config = rs.config()
        if serial is not None:
            config.enable_device(serial)
        config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
        self._pipeline.start(config)
        self.serial = serial

    def read(self) -> np.ndarray:
        frames = self._pipeline.wait_for_frames()
        color = frames.get_color_frame()
        if not color:
            raise RuntimeError(f"RealSense {self.serial or '(first)'} delivered no colour frame")
        return np.asanyarray(color.get_data()).copy()

    def close(self) -> None:
        self._pipeline.stop()
