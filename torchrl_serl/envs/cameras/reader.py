"""Background thread that keeps only the newest frame of a camera."""
from __future__ import annotations

import threading
import time

import numpy as np

from .base import Camera, crop_resize


class LatestFrameReader:
    """Reads ``camera`` continuously; ``latest()`` returns the newest processed frame at once.

    A control loop must not wait for a camera exposure, and must not see frames that queued up
    while it was busy: this thread drops all but the latest.

    Args:
        camera: the source.
        size: ``(height, width)`` the frames are cropped/resized to.
        crop: optional ``(top, left, height, width)`` applied before resizing.
        max_age_s: ``latest()`` raises when the newest frame is older than this.
    """

    def __init__(self, camera: Camera, size: tuple[int, int] = (128, 128),
                 crop: tuple[int, int, int, int] | None = None, max_age_s: float = 1.0):
        self.camera, self.size, self.crop, self.max_age_s = camera, tuple(size), crop, max_age_s
        self._frame: np.ndarray | None = None
        self._stamp = 0.0
        self._error: Exception | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = crop_resize(self.camera.read(), self.size, self.crop)
            except Exception as err:  # reported to the control loop by latest()
                with self._cond:
                    self._error = err
                    self._cond.notify_all()
                return
            with self._cond:
                self._frame, self._stamp = frame, time.monotonic()
                self._cond.notify_all()

    def latest(self, timeout_s: float = 2.0) -> np.ndarray:
        """Newest frame ``[H, W, 3]`` uint8; waits up to ``timeout_s`` for the first one."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._frame is not None or self._error is not None, timeout_s):
                raise TimeoutError(f"no camera frame within {timeout_s} s")
            if self._error is not None:
                raise RuntimeError(f"camera reader stopped: {self._error}") from self._error
            age = time.monotonic() - self._stamp
            if age > self.max_age_s:
                raise RuntimeError(f"newest camera frame is {age:.2f} s old (limit {self.max_age_s} s)")
            return self._frame

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.camera.close()
