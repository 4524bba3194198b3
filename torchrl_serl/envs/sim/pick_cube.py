"""SERL's pick-cube task as a TorchRL ``EnvBase``, for any :class:`SimArm` (Panda, Piper)."""

from __future__ import annotations

import math
from typing import Sequence

import mujoco
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs import EnvBase

from torchrl_serl.envs.pick_task import (
    PROPRIO_OBSERVATION_SIZE,
    STATE_OBSERVATION_SIZE,
    check_pick_action,
    set_pick_task_specs,
)
from torchrl_serl.envs.sim.arm import SimArm
from torchrl_serl.envs.sim.rendering import CameraRenderer
from torchrl_serl.envs.sim.scene import build_scene

CAMERAS = ("front", "wrist")
SUCCESS_LIFT_M = 0.1
DENSE_FULL_LIFT_M = 0.2  # franka_sim: the lift term saturates 0.2 m above the start height


class PickCubeEnv(EnvBase):
    """Lift a 4 cm cube with an arm whose TCP follows an end-effector target (SERL PandaPickCube).

    Specs and action checks are the task's (:mod:`torchrl_serl.envs.pick_task`, shared with the
    real-arm envs). Action ``[4]`` in ``[-1, 1]``: ``dx, dy, dz`` move the TCP target by ``action *
    action_scale_m`` (m), clipped to the task box; ``g`` updates the gripper command ``gripper <-
    clip(gripper + g, 0, 1)`` (franka_sim, action scale 1; 0 open, 1 closed). Out-of-range actions
    are clipped; NaN/inf, a wrong shape or a bool/integer/complex dtype raise ``ValueError`` before
    the simulator is touched (:func:`~torchrl_serl.envs.pick_task.check_pick_action`).

    Observation (``docs/conventions.md``): ``observation [10]`` = block_pos, gripper, tcp_pos, tcp_vel
    for state tasks; ``observation [7]`` = tcp_pos, tcp_vel, gripper plus ``front``/``wrist`` uint8
    ``[3, H, W]`` for pixel tasks. ``gripper`` is the commanded closure, as in franka_sim.
    Positions and velocities are read after the last physics step, as franka_sim's sensors.
    ``pose_keys=True`` (pixel tasks) adds the TCP pose ``tcp_pose [7]`` (xyzw quaternion),
    ``tcp_vel [3]`` and ``gripper [1]`` for the pose wrappers (:mod:`torchrl_serl.envs.pick_task`).

    Reward: dense ``0.3 exp(-20 |block - tcp|) + 0.7 clip(lift / 0.2, 0, 1)`` (franka_sim), or sparse
    ``1[success]``; ``success`` = block lifted more than 0.1 m above its start height. Episodes are
    truncated after ``max_episode_steps``; SERL does not stop on success, so ``terminated`` is only
    set when ``terminate_on_success=True``.

    ``batch_size`` must be ``None``/``()``: batch with ``SerialEnv``/``ParallelEnv``.
    """

    def __init__(
        self,
        pixels: bool = False,
        image_size: int = 128,
        control_hz: float = 10.0,
        physics_dt: float = 0.002,
        action_scale_m: float = 0.1,
        reward_type: str = "dense",
        max_episode_steps: int = 100,
        render_full_quality: bool = False,
        camera_keys: Sequence[str] = CAMERAS,
        device: torch.device | str = "cpu",
        batch_size: torch.Size | Sequence[int] | None = None,
        seed: int | None = None,
        terminate_on_success: bool = False,
        pose_keys: bool = False,
        *,
        arm: SimArm,
    ):
        if batch_size is not None and tuple(batch_size) != ():
            raise ValueError(
                f"batch_size must be None or () (one simulator per env), got {tuple(batch_size)}; "
                "batch with SerialEnv/ParallelEnv."
            )
        if reward_type not in ("dense", "sparse"):
            raise ValueError(f"reward_type must be 'dense' or 'sparse', got {reward_type!r}")
        for name, value in (("control_hz", control_hz), ("physics_dt", physics_dt),
                            ("action_scale_m", action_scale_m)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        substeps = 1.0 / (control_hz * physics_dt)
        if substeps < 1 or abs(substeps - round(substeps)) > 1e-6:
            raise ValueError(
                f"1 / (control_hz * physics_dt) must be a whole number >= 1 of physics steps per "
                f"control step, got control_hz={control_hz}, physics_dt={physics_dt} -> {substeps:g}"
            )
        if not (isinstance(max_episode_steps, int) and max_episode_steps >= 1):
            raise ValueError(f"max_episode_steps must be an int >= 1, got {max_episode_steps!r}")
        if not (isinstance(image_size, int) and 8 <= image_size <= 1024):
            raise ValueError(f"image_size must be an int in [8, 1024], got {image_size!r}")
        camera_keys = tuple(camera_keys)
        if pixels and (not camera_keys or any(k not in CAMERAS for k in camera_keys)
                       or len(set(camera_keys)) != len(camera_keys)):
            raise ValueError(f"camera_keys must be distinct names from {CAMERAS}, got {camera_keys}")
        super().__init__(device=device, batch_size=torch.Size([]))
        self.pixels = pixels
        self.image_size = image_size
        self.control_hz = float(control_hz)
        self.physics_dt = float(physics_dt)
        self.n_substeps = int(round(substeps))
        self.action_scale_m = float(action_scale_m)
        self.reward_type = reward_type
        self.max_episode_steps = max_episode_steps
        self.camera_keys = camera_keys if pixels else ()
        self.terminate_on_success = terminate_on_success
        self.pose_keys = pose_keys

        self.arm = arm
        layout = self.arm.layout
        self.spec = build_scene(self.arm.add_to, physics_dt=self.physics_dt,
                                front_camera_pos=layout.front_camera_pos,
                                front_camera_target=layout.front_camera_target)
        self.model = self.spec.compile()
        self.data = mujoco.MjData(self.model)
        self.arm.bind(self.model)
        self._tcp_id = self.model.site(self.arm.tcp_site).id
        self._block_qpos = self.model.joint("block").qposadr[0]
        self._block_body = self.model.body("block").id
        self._block_half = float(self.model.geom("block").size[2])
        self._box_low = np.asarray(layout.cartesian_low, float)
        self._box_high = np.asarray(layout.cartesian_high, float)
        self._renderer = (CameraRenderer(self.model, image_size, image_size, render_full_quality)
                          if pixels else None)
        self._vel6 = np.zeros(6)
        self._quat_wxyz = np.zeros(4)
        self._obs_buf = np.zeros(PROPRIO_OBSERVATION_SIZE if pixels else STATE_OBSERVATION_SIZE, np.float32)
        self._target = np.zeros(3)
        self._gripper = 0.0
        self._z_init = 0.0
        self._steps = 0
        self._rng = np.random.default_rng(seed)
        set_pick_task_specs(self, len(self._obs_buf), self.camera_keys, (image_size, image_size), pose_keys)

    # ---- privileged state (scripted policies, tests) -----------------------------------------
    def block_pos(self) -> np.ndarray:
        """Cube centre ``[3]`` (m), not part of pixel observations."""
        return self.data.xpos[self._block_body].copy()

    def tcp_pos(self) -> np.ndarray:
        """TCP ``[3]`` (m)."""
        return self.data.site_xpos[self._tcp_id].copy()

    @property
    def tcp_target(self) -> np.ndarray:
        """Current end-effector target ``[3]`` (m), inside the task box."""
        return self._target.copy()

    # ---- EnvBase -----------------------------------------------------------------------------
    def _set_seed(self, seed: int | None) -> None:
        self._rng = np.random.default_rng(seed)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        self.arm.reset(d)
        xy = self._rng.uniform(self.arm.layout.block_xy_low, self.arm.layout.block_xy_high)
        d.qpos[self._block_qpos:self._block_qpos + 3] = (*xy, self._block_half)
        mujoco.mj_forward(m, d)
        self._target = self.tcp_pos()
        self._gripper = 0.0
        self._z_init = float(d.xpos[self._block_body][2])
        self._steps = 0
        out = self._observe()
        false = torch.zeros(1, dtype=torch.bool, device=self.device)
        for key in ("success", "done", "terminated", "truncated"):
            out[key] = false.clone()
        return _tensordict(out, self.device)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = check_pick_action(tensordict.get("action"))
        # target/gripper updates on 4 Python floats: numpy's clip costs ~4 us a call at this size
        scale, target, low, high = self.action_scale_m, self._target, self._box_low, self._box_high
        self._target = np.array([min(max(target[i] + action[i] * scale, low[i]), high[i])
                                 for i in range(3)])
        self._gripper = min(max(self._gripper + action[3], 0.0), 1.0)
        self.arm.set_gripper(self.data, self._gripper)
        self.arm.advance(self.data, self._target, self.n_substeps)
        self._steps += 1

        block, tcp = self.data.xpos[self._block_body], self.data.site_xpos[self._tcp_id]
        lift = float(block[2]) - self._z_init
        success = lift > SUCCESS_LIFT_M
        if self.reward_type == "dense":
            reward = 0.3 * math.exp(-20.0 * math.dist(block, tcp))
            reward += 0.7 * min(max(lift / DENSE_FULL_LIFT_M, 0.0), 1.0)
        else:
            reward = float(success)
        terminated = success and self.terminate_on_success
        truncated = self._steps >= self.max_episode_steps
        out = self._observe()
        dev = self.device
        # torch.full is ~10x cheaper than torch.tensor([...]) for these one-element entries
        out["success"] = torch.full((1,), success, device=dev)
        out["terminated"] = torch.full((1,), terminated, device=dev)
        out["truncated"] = torch.full((1,), truncated, device=dev)
        out["done"] = torch.full((1,), terminated or truncated, device=dev)
        out["reward"] = torch.full((1,), reward, dtype=torch.float32, device=dev)
        return _tensordict(out, dev)

    def _step_proc_data(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        """``_step`` already writes every reward and done entry with its spec's shape and dtype,
        so TorchRL's generic reshape and done completion (~25 us a step) are skipped; with
        ``run_type_checks`` the generic path (and its type checks) runs as usual."""
        if self.run_type_checks:
            return super()._step_proc_data(next_tensordict)
        return next_tensordict

    def _observe(self) -> dict[str, torch.Tensor]:
        d = self.data
        tcp = d.site_xpos[self._tcp_id]
        mujoco.mj_objectVelocity(self.model, d, mujoco.mjtObj.mjOBJ_SITE, self._tcp_id, self._vel6, 0)
        # filled in float32 in place, then one tensor copy (no concatenate/astype temporaries)
        vec = self._obs_buf
        if self.pixels:
            vec[:3], vec[3:6], vec[6] = tcp, self._vel6[3:], self._gripper
        else:
            vec[:3], vec[3], vec[4:7], vec[7:] = d.xpos[self._block_body], self._gripper, tcp, self._vel6[3:]
        out = {"observation": torch.from_numpy(vec.copy()).to(self.device)}
        if self.pose_keys:
            mujoco.mju_mat2Quat(self._quat_wxyz, d.site_xmat[self._tcp_id])
            pose = np.concatenate([tcp, self._quat_wxyz[[1, 2, 3, 0]]]).astype(np.float32)  # xyzw
            out["tcp_pose"] = torch.from_numpy(pose).to(self.device)
            out["tcp_vel"] = torch.from_numpy(vec[3:6].copy()).to(self.device)
            out["gripper"] = torch.from_numpy(vec[6:7].copy()).to(self.device)
        for key in self.camera_keys:
            img = self._renderer.render(d, key)
            out[key] = torch.from_numpy(img).permute(2, 0, 1).contiguous().to(self.device)
        return out

    def render_frame(self, camera: str = "front") -> np.ndarray:
        """``[H, W, 3]`` uint8 frame of ``camera`` (for videos; pixel envs reuse their renderer)."""
        if camera not in CAMERAS:
            raise ValueError(f"camera must be one of {CAMERAS}, got {camera!r}")
        if self._renderer is None:
            self._renderer = CameraRenderer(self.model, self.image_size, self.image_size)
        return self._renderer.render(self.data, camera)

    def close(self, *, raise_if_closed: bool = True) -> None:
        if self._renderer is not None:
            self._renderer.close()
        super().close(raise_if_closed=raise_if_closed)


_EMPTY = torch.Size([])


def _tensordict(entries: dict[str, torch.Tensor], device: torch.device) -> TensorDict:
    """``TensorDict(entries, batch_size=[], device=device)`` for entries already unbatched and on
    ``device`` (made by this env), without the per-entry checks (~4 us of a ~35 us step)."""
    new_unsafe = getattr(TensorDict, "_new_unsafe", None)
    if new_unsafe is None:  # older/newer tensordict without the private fast path
        return TensorDict(entries, batch_size=_EMPTY, device=device)
    return new_unsafe(entries, batch_size=_EMPTY, device=device)
