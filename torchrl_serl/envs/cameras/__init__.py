"""Camera sources for the real-robot envs."""
from .base import Camera, crop_resize
from .opencv import OpenCVCamera
from .reader import LatestFrameReader
from .realsense import RealSenseCamera
from .synthetic import TestPatternCamera

__all__ = ["Camera", "crop_resize", "LatestFrameReader", "OpenCVCamera", "RealSenseCamera", "TestPatternCamera"]
