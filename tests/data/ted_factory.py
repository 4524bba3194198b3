"""Synthetic TED transitions for data tests: every frame encodes its step id, so next frames are checkable."""

from __future__ import annotations

import torch
from tensordict import TensorDict

SIZE = 8


def frames(step_ids: torch.Tensor, camera: int) -> torch.Tensor:
    """uint8 [T, 3, SIZE, SIZE] frames; pixel (c, 0, 0..3) holds the step id bytes, camera in channel 1."""
    t = step_ids.long()
    img = torch.zeros(t.shape[0], 3, SIZE, SIZE, dtype=torch.uint8)
    for b in range(4):
        img[:, 0, 0, b] = ((t >> (8 * b)) & 255).to(torch.uint8)
    img[:, 1] = camera
    return img


def decode(img: torch.Tensor) -> torch.Tensor:
    """Inverse of ``frames``: [B, 3, SIZE, SIZE] -> [B] step ids."""
    return sum(img[:, 0, 0, b].long() << (8 * b) for b in range(4))


def transitions(first_step: int, n: int, done_at: int | None = None, pixels: bool = True, sign: float = 1.0) -> TensorDict:
    """``n`` consecutive TED transitions with ids first_step..; ``observation`` = sign * id (float)."""
    t = torch.arange(first_step, first_step + n)
    done = torch.zeros(n, 1, dtype=torch.bool)
    if done_at is not None:
        done[done_at] = True
    td = TensorDict(
        observation=sign * t[:, None].float().expand(n, 7).clone(),
        action=torch.rand(n, 4) * 2 - 1,
        intervention=torch.zeros(n, 1, dtype=torch.bool),
        next=TensorDict(
            observation=sign * (t + 1)[:, None].float().expand(n, 7).clone(),
            reward=torch.rand(n, 1),
            done=done,
            terminated=done.clone(),
            truncated=torch.zeros(n, 1, dtype=torch.bool),
            batch_size=[n],
        ),
        batch_size=[n],
    )
    if pixels:
        for cam, key in enumerate(["front", "wrist"]):
            td.set(key, frames(t, cam))
            td.set(("next", key), frames(t + 1, cam))
    return td
