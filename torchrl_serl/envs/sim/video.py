"""Record an episode of a simulated task to a GIF (always available) or MP4 (needs imageio-ffmpeg)."""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
from tensordict import TensorDictBase
from torchrl.envs.utils import step_mdp


def record_video(
    env,
    policy: Callable[[TensorDictBase], TensorDictBase],
    path: str | os.PathLike,
    fps: float | None = None,
    *,
    camera: str = "front",
    max_steps: int | None = None,
) -> int:
    """Run one episode of ``env`` (a single, unbatched :class:`PickCubeEnv`) under ``policy`` and
    write the ``camera`` view to ``path`` (``.gif`` or ``.mp4``); ``fps`` defaults to the control
    rate, so the video plays in real time. Returns the number of frames written."""
    import imageio.v3 as iio

    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".gif", ".mp4"):
        raise ValueError(f"path must end in .gif or .mp4, got {path!r}")
    if tuple(env.batch_size) != ():
        raise ValueError(f"record_video needs an unbatched env, got batch_size {tuple(env.batch_size)}")
    fps = float(fps if fps is not None else env.control_hz)
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    max_steps = env.max_episode_steps if max_steps is None else max_steps
    if ext == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError as err:
            raise RuntimeError("writing .mp4 needs `pip install imageio-ffmpeg`; or write a .gif") from err

    td = env.reset()
    frames = [env.render_frame(camera)]
    for _ in range(max_steps):
        td = env.step(policy(td))
        frames.append(env.render_frame(camera))
        if td["next", "done"].item():
            break
        td = step_mdp(td)
    video = np.stack(frames)
    if ext == ".gif":
        iio.imwrite(path, video, extension=".gif", duration=1000.0 / fps, loop=0)
    else:
        iio.imwrite(path, video, extension=".mp4", fps=fps, plugin="FFMPEG")
    return len(frames)
