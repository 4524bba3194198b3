"""The task's env from the recipe options: the simulated pick-cube task or the real arm (with its
cameras), and the human-intervention device."""

from __future__ import annotations

import contextlib

import torch
from torchrl.envs import EnvBase

from torchrl_serl.training.config import EnvConfig, RobotConfig

_TASKS = ("panda", "piper")


def with_relative_pose(env: EnvBase, cfg: EnvConfig) -> EnvBase:
    """With ``cfg.relative_pose``: ``env`` (built with ``pose_keys=True``) behind SERL's pose wrappers,
    :class:`~torchrl_serl.envs.transforms.RelativeFrame` (tool pose, velocity and actions in the frame
    of the tool pose at reset) then :class:`~torchrl_serl.envs.transforms.QuatToEuler`;
    ``observation`` = relative position (m), roll/pitch/yaw (rad), velocity (m/s), gripper ``[10]``.
    Relative to the reset pose the orientation stays near zero, where Euler angles do not wrap
    (a downward tool is at roll ±pi in the base frame)."""
    if not cfg.relative_pose:
        return env
    from torchrl.envs import CatTensors, Compose, TransformedEnv

    from torchrl_serl.envs.transforms import QuatToEuler, RelativeFrame

    return TransformedEnv(env, Compose(
        RelativeFrame("tcp_pose", "tcp_vel", quat_order="xyzw"),
        QuatToEuler(["tcp_pose"], quat_order="xyzw"),
        CatTensors(["tcp_pose", "tcp_vel", "gripper"], out_key="observation", del_keys=False, sort=False),
    ))


def make_sim_env(cfg: EnvConfig, seed: int, device: str | torch.device = "cpu") -> EnvBase:
    """The simulated pick-cube task named by ``cfg.task`` (``panda`` | ``piper``), in the relative
    frame with ``cfg.relative_pose`` (:func:`with_relative_pose`)."""
    if cfg.task not in _TASKS:
        raise ValueError(f"env.task must be one of {_TASKS}, got {cfg.task!r}")
    if cfg.task == "panda":
        from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv as task_cls
    else:
        from torchrl_serl.envs.sim.piper_pick_cube import PiperPickCubeEnv as task_cls
    env = task_cls(
        pixels=cfg.pixels,
        image_size=cfg.image_size,
        control_hz=cfg.control_hz,
        action_scale_m=cfg.action_scale_m,
        reward_type=cfg.reward_type,
        max_episode_steps=cfg.max_episode_steps,
        device=device,
        seed=seed,
        pose_keys=cfg.relative_pose,
    )
    return with_relative_pose(env, cfg)


_CAMERAS = ("realsense", "opencv", "test_pattern")


def make_arm_env(robot: RobotConfig, cfg: EnvConfig, seed: int) -> EnvBase:
    """The real arm named by ``cfg.task`` (``panda`` -> :class:`FrankaEnv`, ``piper`` ->
    :class:`PiperEnv`) at ``robot.address`` (Franka host / Piper CAN channel), with the
    ``front``/``wrist`` cameras of ``robot.camera`` kind when ``cfg.pixels``, in the relative frame
    with ``cfg.relative_pose`` (:func:`with_relative_pose`)."""
    if cfg.task not in _TASKS:
        raise ValueError(f"env.task must be one of {_TASKS}, got {cfg.task!r}")
    if not robot.address:
        raise ValueError("--robot.address is required with --robot.real true (Franka host or Piper CAN channel)")
    from torchrl_serl.envs.robots import FrankaEnv, PiperEnv

    reward_classifier = _load_reward_classifier(robot.reward_classifier, cfg) if robot.reward_classifier else None
    cameras = _make_cameras(robot, seed) if cfg.pixels else None
    common = dict(
        cameras=cameras, image_size=(cfg.image_size, cfg.image_size), control_hz=cfg.control_hz,
        max_episode_steps=cfg.max_episode_steps, seed=seed, pose_keys=cfg.relative_pose,
        reward_classifier=reward_classifier,
    )
    if cfg.task == "panda":
        return with_relative_pose(FrankaEnv(host=robot.address, realtime=robot.realtime, **common), cfg)
    return with_relative_pose(PiperEnv(can_channel=robot.address, **common), cfg)


def _load_reward_classifier(path: str, cfg: EnvConfig):
    """The learned success classifier at ``path``, checked against the env's cameras and image size."""
    from torchrl_serl.modules.classifier import load_pixel_classifier

    if not cfg.pixels:
        raise ValueError("--robot.reward_classifier judges success from the cameras: it needs --env.pixels true")
    classifier = load_pixel_classifier(path)
    arch = classifier.architecture
    if arch["image_size"] != cfg.image_size or set(arch["camera_keys"]) - {"front", "wrist"}:
        raise ValueError(f"the reward classifier {path} reads {arch['camera_keys']} at {arch['image_size']}x"
                         f"{arch['image_size']}; this env has front, wrist at {cfg.image_size}x{cfg.image_size}")
    return classifier


def _make_cameras(robot: RobotConfig, seed: int) -> dict:
    if robot.camera not in _CAMERAS:
        raise ValueError(f"robot.camera must be one of {_CAMERAS}, got {robot.camera!r}")
    ids = [i for i in robot.camera_ids.split(",") if i] if robot.camera_ids else []
    if ids and len(ids) != 2:
        raise ValueError(f"robot.camera_ids must name 2 cameras (front,wrist), got {robot.camera_ids!r}")
    names = ("front", "wrist")
    if robot.camera == "test_pattern":
        from torchrl_serl.envs.cameras.synthetic import TestPatternCamera

        return {name: TestPatternCamera(seed=seed + i) for i, name in enumerate(names)}
    if robot.camera == "opencv":
        from torchrl_serl.envs.cameras.opencv import OpenCVCamera

        sources = [int(i) if i.isdigit() else i for i in ids] or [0, 1]
        return {name: OpenCVCamera(src) for name, src in zip(names, sources)}
    from torchrl_serl.envs.cameras.realsense import RealSenseCamera

    serials = ids or [None, None]
    return {name: RealSenseCamera(serial) for name, serial in zip(names, serials)}


_INTERVENTION_DEVICES = ("spacemouse", "keyboard")


def make_intervention_source(kind: str, stack: contextlib.ExitStack | None = None, keys=None):
    """A human-action source for :class:`~torchrl_serl.envs.transforms.intervention.Intervention`:
    a SpaceMouse, or the keyboard. Keyboard keys come from ``keys`` (a queue filled by a
    :class:`~torchrl_serl.envs.input_devices.keyboard.TerminalKeyReader` in the process that owns the
    terminal, e.g. a ``multiprocessing.Queue`` for an actor process) or, without it, from this
    process's terminal (its reader thread is stopped when ``stack`` closes)."""
    if kind not in _INTERVENTION_DEVICES:
        raise ValueError(f"intervention device must be one of {_INTERVENTION_DEVICES}, got {kind!r}")
    if kind == "spacemouse":
        from torchrl_serl.envs.input_devices.spacemouse import SpaceMouseSource

        return SpaceMouseSource()
    import queue

    from torchrl_serl.envs.input_devices.keyboard import KeyboardSource, TerminalKeyReader

    if keys is None:
        if stack is None:
            raise ValueError("the keyboard source needs a key queue or an ExitStack for its terminal reader")
        keys = queue.Queue()
        stack.enter_context(TerminalKeyReader(keys))
    return KeyboardSource(keys)


def make_env(cfg: EnvConfig, robot: RobotConfig | None, seed: int, device: str | torch.device = "cpu") -> EnvBase:
    """The real arm when ``robot.real``, else the simulated twin of the same task."""
    if robot is not None and robot.real:
        return make_arm_env(robot, cfg, seed)
    return make_sim_env(cfg, seed, device)
