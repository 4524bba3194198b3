"""Evaluation episodes with the deterministic policy: success rate, return, optional video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchrl.envs import EnvBase, ExplorationType, set_exploration_type


def evaluate(
    env: EnvBase,
    policy: nn.Module,
    num_episodes: int,
    max_steps: int | None = None,
    video_path: str | Path | None = None,
    video_key: str = "front",
    fps: float | None = None,
) -> dict[str, float]:
    """Run ``num_episodes`` episodes acting with the policy's mode (no exploration noise).

    Args:
        env: a single (unbatched) env writing ``("next", "reward")``, ``("next", "done")`` and,
            for the pick tasks, ``("next", "success")``.
        max_steps: per-episode cap; default ``env.max_episode_steps`` (the env truncates itself).
        video_path: if given, the first episode is written there (``.gif`` works without ffmpeg,
            ``.mp4`` needs imageio-ffmpeg). Frames come from the ``video_key`` camera of a pixel
            env, or from ``env.render_frame(video_key)`` on a state env that offers it.
        fps: video rate; default the env's ``control_hz``.

    Returns ``{"eval/success_rate", "eval/return", "eval/episode_length"}`` (means over episodes;
    an episode succeeds if ``success`` was true at any step).
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    max_steps = int(max_steps or getattr(env, "max_episode_steps", 1000))
    returns, successes, lengths = [], [], []
    frames: list[np.ndarray] = []
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        for episode in range(num_episodes):
            record = video_path is not None and episode == 0
            if record and video_key not in env.observation_spec.keys():
                td = _rollout_rendering(env, policy, max_steps, video_key, frames)
            else:
                td = env.rollout(max_steps, policy, break_when_any_done=True, auto_reset=True)
                if record:
                    frames.extend(_hwc(td["next", video_key]))
            returns.append(float(td["next", "reward"].sum()))
            success = td.get(("next", "success"), None)
            successes.append(float(success.any()) if success is not None else float("nan"))
            lengths.append(td.shape[-1])
    if video_path is not None:
        _write_video(video_path, frames, fps or getattr(env, "control_hz", 10.0))
    return {
        "eval/success_rate": float(np.mean(successes)),
        "eval/return": float(np.mean(returns)),
        "eval/episode_length": float(np.mean(lengths)),
    }


def _rollout_rendering(env, policy, max_steps, camera, frames):
    render = getattr(env, "render_frame", None)
    if render is None:
        raise ValueError(
            f"video needs camera key {camera!r} in the observations or an env with render_frame(camera); "
            f"{type(env).__name__} has neither"
        )
    td = env.reset()
    frames.append(np.asarray(render(camera)))
    return env.rollout(
        max_steps, policy, break_when_any_done=True, auto_reset=False, tensordict=td,
        callback=lambda env, _: frames.append(np.asarray(render(camera))),
    )


def _hwc(images: torch.Tensor) -> list[np.ndarray]:
    return list(images.permute(0, 2, 3, 1).cpu().numpy())


def _write_video(path, frames, fps) -> None:
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [f if f.shape[-1] == 3 else f.transpose(1, 2, 0) for f in frames]
    if path.suffix == ".gif":
        imageio.mimsave(path, frames, duration=1000.0 / fps, loop=0)
    else:
        imageio.mimsave(path, frames, fps=fps)


__all__ = ["evaluate"]
