"""Pretrain a ResNet-10 trunk on simulated camera frames (a stand-in for SERL's ImageNet weights).

SERL freezes an ImageNet-pretrained ResNet-10; those weights cannot be downloaded here, and a frozen
*random* trunk learns the pick task slowly (docs/results.md). :func:`pretrain_trunk` renders the
task's two cameras along noisy scripted pick episodes and trains the trunk, with a throw-away head,
to regress the simulator's state from the two images: cube position, TCP position and gripper
opening. Images are randomly shifted (DrQ's 4 px) so the features tolerate the learner's
augmentation. The privileged state is used only here, never by the RL learner, which sees the
images and the 7-D proprioception as SERL does. :func:`cached_pretrained_trunk` keeps one trunk
per task and image size in a cache folder, so the main command pretrains once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tensordict import TensorDict
from torch import nn

from torchrl_serl.modules.augmentation import random_shift
from torchrl_serl.modules.pixel_encoder import make_trunk

CAMERAS = ("front", "wrist")
LABELS = {"cube_xyz": 3, "tcp_xyz": 3, "gripper": 1}  # regression targets and their sizes


@dataclass
class PretrainResult:
    """What :func:`pretrain_trunk` made: the trunk ``state_dict`` and its held-out errors."""

    state_dict: dict
    cube_error_cm: float
    tcp_error_cm: float
    seconds: float


def collect_frames(env, num_frames: int, max_noise: float, generator: torch.Generator) -> TensorDict:
    """``num_frames`` frames of noisy scripted pick episodes on a simulated pixel pick-cube env:
    camera images ``[N, 3, H, W]`` and state labels."""
    from torchrl_serl.envs.sim.scripted import ScriptedPickPolicy

    rows = []
    while len(rows) < num_frames:
        noise = float(torch.rand((), generator=generator)) * max_noise
        policy = ScriptedPickPolicy(env, noise_std=noise, generator=generator)
        td = env.reset()
        for _ in range(env.max_episode_steps):
            rows.append(TensorDict({
                **{k: td[k] for k in CAMERAS},
                "cube_xyz": torch.as_tensor(env.block_pos(), dtype=torch.float32),
                "tcp_xyz": torch.as_tensor(env.tcp_pos(), dtype=torch.float32),
                "gripper": td["observation"][-1:].float(),
            }, []))
            td = env.step(policy(td))["next"]
            if bool(td["done"]) or len(rows) >= num_frames:
                break
    return torch.stack(rows)


class StateRegressor(nn.Module):
    """Trunk (shared by both cameras) -> flattened feature maps -> MLP -> 7 state values."""

    def __init__(self, trunk: nn.Module, image_size: int):
        super().__init__()
        self.trunk = trunk
        c, h, w = trunk.output_shape(image_size)
        self.head = nn.Sequential(nn.Linear(len(CAMERAS) * c * h * w, 256), nn.LayerNorm(256), nn.ReLU(),
                                  nn.Linear(256, sum(LABELS.values())))

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # [B, cams, 3, H, W] uint8 -> [B, 7]
        b = images.shape[0]
        return self.head(self.trunk(images.flatten(0, 1)).reshape(b, -1))


def pretrain_trunk(
    env,
    frames: int = 3000,
    iterations: int = 150,
    batch_size: int = 32,
    lr: float = 3e-4,
    pad: int = 4,
    max_noise: float = 0.6,
    seed: int = 0,
    log=print,
) -> PretrainResult:
    """Render ``frames`` (+10 percent held out) on ``env`` (a simulated pixel pick-cube task) and
    train a ResNet-10 trunk for ``iterations`` Adam steps of ``batch_size`` frames (both cameras)."""
    if frames < 10 or iterations < 1 or batch_size < 1:
        raise ValueError(f"need frames >= 10, iterations >= 1, batch_size >= 1; got {frames}, {iterations}, {batch_size}")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    data = collect_frames(env, frames + max(frames // 10, 1), max_noise, generator)
    log(f"rendered {data.shape[0]} frames in {time.perf_counter() - start:.0f} s")
    images = torch.stack([data[k] for k in CAMERAS], 1)  # [N, cams, 3, H, W]
    labels = torch.cat([data[k] for k in LABELS], -1)  # [N, 7]
    mean, std = labels.mean(0), labels.std(0).clamp_min(1e-3)
    image_size = images.shape[-1]
    model = StateRegressor(make_trunk("resnet10", channels_last=True), image_size)
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    for it in range(1, iterations + 1):
        idx = torch.randint(0, frames, (batch_size,), generator=generator)
        loss = ((model(random_shift(images[idx], pad, generator)) - (labels[idx] - mean) / std) ** 2).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if it % 50 == 0 or it == iterations:
            log(f"iter {it} loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)")
    model.eval()
    with torch.no_grad():
        held_out = torch.cat([model(images[i:i + 64]) for i in range(frames, images.shape[0], 64)])
    err = (held_out * std + mean - labels[frames:]).abs()
    state = {k: v.contiguous() for k, v in model.trunk.state_dict().items()}
    return PretrainResult(state, float(err[:, :3].norm(dim=-1).mean()) * 100, float(err[:, 3:6].norm(dim=-1).mean()) * 100,
                          time.perf_counter() - start)


__all__ = ["PretrainResult", "StateRegressor", "collect_frames", "pretrain_trunk"]
