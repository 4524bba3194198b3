"""What the DrQ recipes' CPU preset makes once per task and keeps: a pretrained trunk, scripted demos.

Both live under :func:`cache_dir` and are written atomically (a killed run leaves no half file).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import torch


def cache_dir() -> Path:
    """Where pretrained trunks are kept: ``$TORCHRL_SERL_CACHE`` or ``~/.cache/torchrl_serl``."""
    return Path(os.environ.get("TORCHRL_SERL_CACHE", Path.home() / ".cache" / "torchrl_serl"))


def cached_pretrained_trunk(env_cfg, seed: int = 0, log=print, **kwargs) -> Path:
    """Path of a trunk pretrained on ``env_cfg``'s simulated task (``task``, ``image_size``),
    pretrained now (minutes on a CPU) if the cache has none. Written atomically."""
    from torchrl_serl.training.env_factory import make_sim_env
    from torchrl_serl.training.trunk_pretraining import pretrain_trunk

    path = cache_dir() / "trunks" / f"{env_cfg.task}_resnet10_{env_cfg.image_size}px.pt"
    if path.is_file():
        return path
    log(f"no pretrained trunk for the {env_cfg.task} task at {path}: pretraining one on simulated frames "
        "(once, a few minutes on a CPU)")
    # the trunk sees images only; the scripted episodes that render them act in the base frame
    env = make_sim_env(dataclasses.replace(env_cfg, relative_pose=False), seed=seed)
    try:
        result = pretrain_trunk(env, seed=seed, log=log, **kwargs)
    finally:
        env.close()
    log(f"held-out mean error: cube {result.cube_error_cm:.2f} cm, tcp {result.tcp_error_cm:.2f} cm")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(result.state_dict, tmp)
    os.replace(tmp, path)
    return path


def cached_scripted_demos(env_cfg, episodes: int = 20, seed: int = 0, log=print) -> Path:
    """Folder of ``episodes`` successful scripted pixel demos of ``env_cfg``'s simulated task
    (``record_demos.py --env.pixels true``), recorded now (about a minute) if the cache has none."""
    from torchrl_serl.data.demos import record_demos, save_demos
    from torchrl_serl.envs.sim.scripted import ScriptedPickPolicy
    from torchrl_serl.training.env_factory import make_sim_env

    if env_cfg.relative_pose:
        raise ValueError("scripted demos move the tool in the base frame: with --env.relative_pose true pass "
                         "--demos <folder> (teleoperated with the same option) or --demos ''")
    name = f"{env_cfg.task}_pixels_{env_cfg.image_size}px_{env_cfg.max_episode_steps}steps_{episodes}ep"
    path = cache_dir() / "demos" / name
    if (path / "metadata.json").is_file():
        return path
    log(f"no scripted demos at {path}: recording {episodes} successful episodes in the simulation (once)")
    env = make_sim_env(env_cfg, seed=seed)
    try:
        policy = ScriptedPickPolicy(env, action_scale_m=env_cfg.action_scale_m, noise_std=0.1,
                                    generator=torch.Generator().manual_seed(seed))
        data = record_demos(env, policy, episodes, max_steps=env_cfg.max_episode_steps)
    finally:
        env.close()
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_demos(tmp, data, env_name=f"{env_cfg.task}_pick_cube", cameras=["front", "wrist"],
               action_scale_m=env_cfg.action_scale_m, fps=env_cfg.control_hz, source="scripted")
    os.replace(tmp, path)
    return path


__all__ = ["cache_dir", "cached_pretrained_trunk", "cached_scripted_demos"]
