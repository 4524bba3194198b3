"""Gymnasium view of the simulated tasks: ``gymnasium.make("torchrl_serl/PandaPickCube-v0")``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from torchrl_serl.envs.sim.pick_cube import PickCubeEnv

GYM_IDS = {
    "torchrl_serl/PandaPickCube-v0": ("panda", False),
    "torchrl_serl/PandaPickCubeVision-v0": ("panda", True),
    "torchrl_serl/PiperPickCube-v0": ("piper", False),
    "torchrl_serl/PiperPickCubeVision-v0": ("piper", True),
}


def _task_class(robot: str) -> type[PickCubeEnv]:
    if robot == "panda":
        from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv

        return PandaPickCubeEnv
    if robot == "piper":
        from torchrl_serl.envs.sim.piper_pick_cube import PiperPickCubeEnv

        return PiperPickCubeEnv
    raise ValueError(f"robot must be 'panda' or 'piper', got {robot!r}")


class PickCubeGymEnv(gym.Env):
    """``gymnasium.Env`` around a :class:`PickCubeEnv`. Observations are a ``Dict`` with
    ``observation`` (float32 ``[D]``) and, for vision tasks, ``front``/``wrist`` uint8 ``[H, W, 3]``
    (gym's channels-last). ``info["success"]`` reports the lift. The wrapped env truncates itself."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, robot: str = "panda", pixels: bool = False, render_mode: str | None = None, **kwargs):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.env = _task_class(robot)(pixels=pixels, **kwargs)
        spaces = {"observation": gym.spaces.Box(-np.inf, np.inf, self.env.observation_spec["observation"].shape,
                                                np.float32)}
        size = self.env.image_size
        for key in self.env.camera_keys:
            spaces[key] = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.metadata = {**self.metadata, "render_fps": self.env.control_hz}

    def _obs(self, td) -> dict:
        obs = {"observation": td["observation"].cpu().numpy()}
        for key in self.env.camera_keys:
            obs[key] = td[key].permute(1, 2, 0).cpu().numpy()
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.env.set_seed(seed)
        td = self.env.reset()
        return self._obs(td), {"success": False}

    def step(self, action):
        td = TensorDict({"action": torch.as_tensor(np.asarray(action), dtype=torch.float32)}, batch_size=[])
        nxt = self.env.step(td)["next"]
        info = {"success": bool(nxt["success"].item())}
        return (self._obs(nxt), float(nxt["reward"].item()), bool(nxt["terminated"].item()),
                bool(nxt["truncated"].item()), info)

    def render(self):
        return self.env.render_frame("front")

    def close(self):
        self.env.close()


def register_gym_envs() -> None:
    """Register the four task ids with gymnasium (idempotent)."""
    for env_id, (robot, pixels) in GYM_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=PickCubeGymEnv, kwargs={"robot": robot, "pixels": pixels})
