"""Pretrain a ResNet-10 trunk on simulated camera frames, for DrQ with a frozen trunk.

SERL freezes an ImageNet-pretrained ResNet-10; those weights cannot be downloaded here, and a
frozen *random* trunk learns the pick task slowly (docs/results.md). This recipe makes a trunk that
knows where things are: it renders the task's two cameras along noisy scripted pick episodes and
trains the trunk (with a throw-away head) to regress the simulator's state from the images: cube
position, TCP position and gripper opening. The images are randomly shifted (DrQ's 4 px), so the
features tolerate the learner's augmentation. The privileged state is used only here, never by
the RL learner, which sees the two images and the 7-D proprioception as SERL does.

    python recipes/pretrain_trunk.py --out trunks/panda_resnet10.pt
    python recipes/drq_sim.py --drq.pretrained_path trunks/panda_resnet10.pt --drq.feature_views 2 ...

Writes the trunk ``state_dict`` (load with ``--drq.pretrained_path``) and prints the held-out
cube-position error in cm.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tensordict import TensorDict
from torch import nn

from torchrl_serl.envs.sim.scripted import ScriptedPickPolicy
from torchrl_serl.modules.augmentation import random_shift
from torchrl_serl.modules.drq_networks import make_trunk
from torchrl_serl.training.builders import make_sim_env, seed_everything
from torchrl_serl.training.config import EnvConfig, parse_config

CAMERAS = ("front", "wrist")
LABELS = ("cube_xyz", "tcp_xyz", "gripper")  # 3 + 3 + 1 regression targets


@dataclass
class Config:
    out: str = "trunks/panda_resnet10.pt"
    """Where to write the trunk state_dict (``--drq.pretrained_path``)."""
    frames: int = 4000
    """Frames to render for training (one tenth more are rendered and held out)."""
    iterations: int = 400
    batch_size: int = 32
    lr: float = 3e-4
    pad: int = 4
    """Random-shift augmentation in px (DrQ's)."""
    max_noise: float = 0.6
    """Each episode's scripted-policy noise std is drawn in [0, max_noise] (diverse states)."""
    threads: int = 0
    """torch threads (0: torch's default)."""
    seed: int = 0
    env: EnvConfig = field(default_factory=lambda: EnvConfig(pixels=True))


def collect_frames(env, num_frames: int, max_noise: float, generator: torch.Generator) -> TensorDict:
    """``num_frames`` frames of noisy scripted pick episodes: camera images and state labels."""
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
                                  nn.Linear(256, 7))

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # [B, cams, 3, H, W] uint8
        b = images.shape[0]
        feats = self.trunk(images.flatten(0, 1))
        return self.head(feats.reshape(b, -1))


def main(argv=None) -> None:
    cfg = parse_config(Config, argv, description=__doc__)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    env = make_sim_env(cfg.env, seed=cfg.seed)
    t0 = time.perf_counter()
    data = collect_frames(env, int(cfg.frames * 1.1), cfg.max_noise, generator)
    env.close()
    print(f"rendered {data.shape[0]} frames in {time.perf_counter() - t0:.0f} s", flush=True)
    images = torch.stack([data[k] for k in CAMERAS], 1)  # [N, cams, 3, H, W]
    labels = torch.cat([data[k] for k in LABELS], -1)  # [N, 7]
    mean, std = labels.mean(0), labels.std(0).clamp_min(1e-3)
    n_train = cfg.frames
    model = StateRegressor(make_trunk("resnet10", channels_last=True), cfg.env.image_size)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    t0 = time.perf_counter()
    for it in range(1, cfg.iterations + 1):
        idx = torch.randint(0, n_train, (cfg.batch_size,), generator=generator)
        x = random_shift(images[idx], cfg.pad, generator)
        loss = ((model(x) - (labels[idx] - mean) / std) ** 2).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if it % 50 == 0 or it == cfg.iterations:
            print(f"iter {it} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    model.eval()
    with torch.no_grad():
        held_out = torch.cat([model(images[i:i + 64]) for i in range(n_train, images.shape[0], 64)])
    err = (held_out * std + mean - labels[n_train:]).abs()
    cube_cm = float(err[:, :3].norm(dim=-1).mean()) * 100
    tcp_cm = float(err[:, 3:6].norm(dim=-1).mean()) * 100
    print(f"held-out mean error: cube {cube_cm:.2f} cm, tcp {tcp_cm:.2f} cm", flush=True)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.trunk.state_dict(), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
