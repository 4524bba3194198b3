"""Gymnasium registration and episode videos."""

import gymnasium as gym
import numpy as np
import pytest

import torchrl_serl.envs  # noqa: F401  (registers the ids)
from torchrl_serl.envs import PiperPickCubeEnv, ScriptedPickPolicy, record_video
from torchrl_serl.envs.sim.gym_registration import GYM_IDS


@pytest.mark.parametrize("env_id", sorted(GYM_IDS))
def test_gym_make_reset_step(env_id):
    env = gym.make(env_id, image_size=32)
    try:
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        if "Vision" in env_id:
            assert obs["front"].shape == (32, 32, 3) and obs["front"].dtype == np.uint8
            assert obs["observation"].shape == (7,)
        else:
            assert set(obs) == {"observation"} and obs["observation"].shape == (10,)
        obs2, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs2)
        assert isinstance(reward, float) and not terminated and not truncated
        assert info["success"] is False
        again, _ = env.reset(seed=0)
        np.testing.assert_array_equal(again["observation"], obs["observation"])
    finally:
        env.close()


def test_gym_env_truncates_after_max_episode_steps():
    env = gym.make("torchrl_serl/PiperPickCube-v0", max_episode_steps=3)
    env.reset(seed=0)
    flags = [env.step(np.zeros(4, np.float32))[3] for _ in range(3)]
    assert flags == [False, False, True]
    env.close()


def test_record_video_gif(tmp_path):
    env = PiperPickCubeEnv(seed=0, image_size=48)
    try:
        path = tmp_path / "episode.gif"
        n = record_video(env, ScriptedPickPolicy(), path, max_steps=12)
        assert n == 13  # reset frame + one per step
        import imageio.v3 as iio

        frames = iio.imread(path)
        assert frames.ndim == 4 and frames.shape[1:] == (48, 48, 3)
        assert frames.shape[0] > 1
        with pytest.raises(ValueError, match=".gif or .mp4"):
            record_video(env, ScriptedPickPolicy(), tmp_path / "x.avi")
    finally:
        env.close()


def test_record_video_mp4_needs_imageio_ffmpeg(tmp_path, monkeypatch):
    import sys

    env = PiperPickCubeEnv(seed=0, image_size=48)
    try:
        monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if not installed
        with pytest.raises(RuntimeError, match="imageio-ffmpeg"):
            record_video(env, ScriptedPickPolicy(), tmp_path / "episode.mp4", max_steps=2)
    finally:
        env.close()


def test_record_video_mp4(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    env = PiperPickCubeEnv(seed=0, image_size=48)
    try:
        path = tmp_path / "episode.mp4"
        assert record_video(env, ScriptedPickPolicy(), path, max_steps=5) == 6
        assert path.stat().st_size > 0
    finally:
        env.close()
