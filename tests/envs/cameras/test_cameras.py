"""Camera sources, crop/resize and the latest-frame reader."""
import importlib.util
import time

import numpy as np
import pytest

from torchrl_serl.envs.cameras import LatestFrameReader, TestPatternCamera, crop_resize


def test_test_pattern_is_deterministic_and_distinct_per_seed():
    a, b = TestPatternCamera(48, 64, fps=None, seed=0), TestPatternCamera(48, 64, fps=None, seed=0)
    frames_a = [a.read() for _ in range(3)]
    np.testing.assert_array_equal(frames_a[2], b.frame(2))
    assert frames_a[0].shape == (48, 64, 3) and frames_a[0].dtype == np.uint8
    assert not np.array_equal(frames_a[0], frames_a[1])
    assert not np.array_equal(a.frame(0), TestPatternCamera(48, 64, fps=None, seed=1).frame(0))


def test_crop_resize():
    pytest.importorskip("cv2", reason="resizing needs opencv-python-headless (the [robots] extra)")
    frame = TestPatternCamera(480, 640, fps=None).frame(0)
    out = crop_resize(frame, (128, 128), crop=(0, 80, 480, 480))
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    # A flat colour stays that colour through crop and area resizing.
    flat = np.full((100, 200, 3), 77, np.uint8)
    np.testing.assert_array_equal(crop_resize(flat, (10, 10)), np.full((10, 10, 3), 77, np.uint8))
    # The crop picks the region: the left half of a half-black/half-white frame is black.
    halves = np.concatenate([np.zeros((50, 50, 3), np.uint8), np.full((50, 50, 3), 255, np.uint8)], axis=1)
    assert crop_resize(halves, (8, 8), crop=(0, 0, 50, 50)).max() == 0
    with pytest.raises(ValueError, match="does not fit"):
        crop_resize(frame, (64, 64), crop=(400, 0, 100, 100))
    with pytest.raises(ValueError, match="uint8"):
        crop_resize(frame.astype(np.float32), (64, 64))


def test_latest_frame_reader_returns_newest_and_drops_old():
    pytest.importorskip("cv2", reason="resizing needs opencv-python-headless (the [robots] extra)")
    cam = TestPatternCamera(60, 80, fps=100.0)
    reader = LatestFrameReader(cam, size=(30, 40))
    try:
        first = reader.latest()
        time.sleep(0.2)  # ~20 frames go by; only the newest is kept
        newest = reader.latest()
        assert newest.shape == (30, 40, 3)
        assert cam.frame_index > 10
        k = cam.frame_index
        assert any(np.array_equal(newest, crop_resize(cam.frame(j), (30, 40))) for j in range(k - 10, k))
        assert not np.array_equal(first, newest)
    finally:
        reader.close()


def test_latest_frame_reader_reports_a_dead_camera():
    class Dead(TestPatternCamera):
        def read(self):
            raise RuntimeError("unplugged")

    reader = LatestFrameReader(Dead(fps=None))
    with pytest.raises(RuntimeError, match="unplugged"):
        reader.latest(timeout_s=1.0)
    reader.close()


def test_opencv_camera_reads_a_video_file(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="needs opencv-python-headless (the [robots] extra)")
    from torchrl_serl.envs.cameras import OpenCVCamera

    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for k in range(3):
        bgr = np.zeros((48, 64, 3), np.uint8)
        bgr[..., 2] = 200  # red in BGR
        writer.write(bgr)
    writer.release()
    cam = OpenCVCamera(path)
    try:
        rgb = cam.read()
        assert rgb.shape == (48, 64, 3)
        assert rgb[..., 0].mean() > 150 and rgb[..., 2].mean() < 50, "converted to RGB"
        for _ in range(2):
            cam.read()
        with pytest.raises(RuntimeError, match="no frame"):
            cam.read()
    finally:
        cam.close()
    with pytest.raises(RuntimeError, match="could not open"):
        OpenCVCamera(str(tmp_path / "missing.avi"))


@pytest.mark.skipif(importlib.util.find_spec("pyrealsense2") is not None, reason="pyrealsense2 installed")
def test_realsense_without_package_gives_install_hint():
    from torchrl_serl.envs.cameras import RealSenseCamera

    with pytest.raises(ImportError, match=r"torchrl-serl\[realsense\]"):
        RealSenseCamera()
