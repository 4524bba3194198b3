"""Real arms as TorchRL envs with the specs and action checks of the simulated pick tasks
(:mod:`torchrl_serl.envs.pick_task`): ``observation`` float32 ``[7]`` = tcp_pos [m], tcp_vel [m/s],
gripper (0 open, 1 closed); one uint8 ``[3, H, W]`` image per camera (``front``, ``wrist``);
``action`` float32 ``[4]`` in ``[-1, 1]`` = tool delta x ``action_scale_m`` and gripper increment;
``reward``, ``success``, ``done``/``terminated``/``truncated`` ``[1]``.
"""
from __future__ import annotations

import collections
import gc
import threading
import time

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs import EnvBase

from ..cameras.base import Camera
from ..cameras.reader import LatestFrameReader
from ..pick_task import PROPRIO_OBSERVATION_SIZE, check_pick_action, set_pick_task_specs
from .franka import PANDA_HOME_Q, FrankaArm
from .interfaces import ArmState, RobotArm, RobotConnectionError, RobotError
from .piper import PiperArm
from .safety import SafetyLimits, Watchdog, check_finite_vector, stop_on_sigint


class RealArmEnv(EnvBase):
    """A ``RobotArm`` plus cameras as an ``EnvBase``, stepped at ``control_hz``.

    Each step: validate the action (non-floating dtype, NaN/inf, shape refused before anything
    is sent), read the arm's pose, add ``action[:3] * action_scale_m`` to it, clip through
    ``safety`` (box and tilt, then per-step limits from that freshly read pose), send it as the
    tracked target, update the gripper, then sleep to the next control tick and read state and
    cameras. Any arm error or lost link stops the arm and raises
    ``RobotError``/``RobotConnectionError``; a ``Watchdog`` stops the arm when steps stop coming;
    Ctrl-C during a step stops the arm. ``reset`` freezes the Python heap (``gc.freeze``) once the
    arm holds its start pose, after collecting what the last episode left, so that no ~0.3 s full
    collection falls inside the episode's control loop.

    After any exception inside ``reset``/``step`` (arm error, lost link, Ctrl-C) the arm is
    stopped and the watchdog disarmed, and ``step`` refuses with ``RuntimeError`` until
    ``reset`` has re-homed the arm and re-armed the watchdog: the arm only takes policy targets
    while the watchdog guards them. The watchdog is also disarmed during ``reset``, whose
    blocking moves are bounded by their own timeouts (a watchdog stop would abort them).

    Args:
        arm: a connected ``RobotArm``.
        safety: workspace and step limits. ``safety.reference_quat`` is the allowed tilt centre.
        cameras: name -> ``Camera`` (``{"front": ..., "wrist": ...}``); each read by a ``LatestFrameReader``.
        image_size: ``(H, W)`` of the image observations.
        control_hz: policy rate [Hz].
        action_scale_m: tool displacement [m] of a unit action.
        max_episode_steps: truncation horizon.
        home_q: joints [rad] of the reset move; ``home_pos``/``home_quat`` default to the pose reached there.
        reset_noise_m: half-width [m] of the uniform xy noise added to the home position.
        target_pos_m, target_tol_m: success when the tool is within ``target_tol_m`` of ``target_pos_m``.
        reward_classifier: module reading the observation tensordict ``[1]`` (``observation``,
            camera keys) and returning a success logit ``[1, 1]``, or a TensorDictModule writing
            it to its ``out_key`` (``SuccessClassifier``: ``"logit"``); success = sigmoid > 0.5.
            Replaces the target-pose test when given.
        watchdog_timeout_s: stop the arm when no step arrives for this long (``None``: no watchdog).
        terminate_on_success: end the episode on success (SERL's real envs do; the sim tasks
            default to ``False``, as SERL's sim does).
        pose_keys: also observe ``tcp_pose [7]`` (position + ``ArmState.tcp_quat``, xyzw),
            ``tcp_vel [3]`` and ``gripper [1]``, for the pose wrappers (:mod:`~torchrl_serl.envs.pick_task`).
    """

    def __init__(
        self,
        arm: RobotArm,
        safety: SafetyLimits,
        cameras: dict[str, Camera] | None = None,
        image_size: tuple[int, int] = (128, 128),
        control_hz: float = 10.0,
        action_scale_m: float = 0.05,
        max_episode_steps: int = 100,
        home_q=None,
        home_pos=None,
        home_quat=None,
        reset_noise_m: float = 0.02,
        target_pos_m=None,
        target_tol_m: float = 0.02,
        reward_classifier: torch.nn.Module | None = None,
        watchdog_timeout_s: float | None = 1.0,
        terminate_on_success: bool = True,
        seed: int | None = None,
        pose_keys: bool = False,
    ):
        super().__init__(device="cpu", batch_size=torch.Size([]))
        if not 0 < control_hz <= 1000:
            raise ValueError(f"control_hz {control_hz} is outside (0, 1000]")
        if not 0 < action_scale_m <= 0.2:
            raise ValueError(f"action_scale_m {action_scale_m} is outside (0, 0.2] m")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.arm, self.safety = arm, safety
        self.control_hz, self.period_s = float(control_hz), 1.0 / float(control_hz)
        self.action_scale_m = float(action_scale_m)
        self.max_episode_steps = int(max_episode_steps)
        self.home_q = None if home_q is None else check_finite_vector("home_q", home_q, arm.n_joints)
        self.home_pos = None if home_pos is None else check_finite_vector("home_pos", home_pos, 3)
        self.home_quat = None if home_quat is None else check_finite_vector("home_quat", home_quat, 4)
        self.reset_noise_m = float(reset_noise_m)
        self.target_pos_m = None if target_pos_m is None else check_finite_vector("target_pos_m", target_pos_m, 3)
        self.target_tol_m = float(target_tol_m)
        self.reward_classifier = reward_classifier
        self.terminate_on_success = terminate_on_success
        self.pose_keys = pose_keys
        self.image_size = tuple(image_size)
        self.readers = {name: LatestFrameReader(cam, self.image_size) for name, cam in (cameras or {}).items()}
        # The watchdog thread and the control loop both command the arm: one at a time.
        self._arm_lock = threading.Lock()
        self.watchdog = None if watchdog_timeout_s is None else Watchdog(self._locked_stop, watchdog_timeout_s)
        self.step_periods_s: collections.deque[float] = collections.deque(maxlen=10_000)
        self._rng = np.random.default_rng(seed)
        self._state: ArmState | None = None
        self._target_quat: np.ndarray | None = None
        self._gripper_cmd = 0.0
        self._gripper_sent_m: float | None = None
        self._steps = 0
        self._last_tick: float | None = None
        self._failure: str | None = None  # why the last reset/step stopped the arm
        set_pick_task_specs(self, PROPRIO_OBSERVATION_SIZE, list(self.readers), self.image_size, pose_keys)

    def _set_seed(self, seed: int | None) -> None:
        self._rng = np.random.default_rng(seed)

    # -- helpers --------------------------------------------------------------------------
    def _await_fresh_state(self, timeout_s: float = 1.0) -> None:
        """Returns once the arm reports a state that is not stale; raises the arm's
        ``RobotConnectionError`` if it still reports stale state after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.arm.get_state()
                return
            except RobotConnectionError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    def _read_state(self) -> ArmState:
        state = self.arm.get_state()
        if state.has_error:
            raise RobotError(f"{type(self.arm).__name__} reported errors {state.errors}; arm stopped")
        return state

    def _locked_stop(self) -> None:
        with self._arm_lock:
            self.arm.stop()

    def _gripper_closed_fraction(self) -> float:
        gripper = self.arm.gripper
        if gripper is None:
            return 0.0
        return float(np.clip(1.0 - gripper.width() / gripper.max_width_m, 0.0, 1.0))

    def _command_gripper(self, closed_fraction: float) -> None:
        gripper = self.arm.gripper
        if gripper is None:
            return
        width = (1.0 - closed_fraction) * gripper.max_width_m
        # Gripper moves are slow and each new command restarts one: skip sub-5 mm changes.
        if self._gripper_sent_m is None or abs(width - self._gripper_sent_m) > 0.005:
            gripper.move_to_position(width)
            self._gripper_sent_m = width

    def _observe(self, state: ArmState) -> TensorDict:
        obs = np.concatenate([state.tcp_pos, state.tcp_vel, [self._gripper_closed_fraction()]])
        out = {"observation": torch.as_tensor(obs, dtype=torch.float32)}
        if self.pose_keys:
            out["tcp_pose"] = torch.as_tensor(np.concatenate([state.tcp_pos, state.tcp_quat]), dtype=torch.float32)
            out["tcp_vel"] = out["observation"][3:6].clone()
            out["gripper"] = out["observation"][6:].clone()
        for name, reader in self.readers.items():
            out[name] = torch.from_numpy(reader.latest().transpose(2, 0, 1).copy())
        td = TensorDict(out, batch_size=[])
        td["success"] = torch.tensor([self._success(state, td)], dtype=torch.bool)
        return td

    def _success(self, state: ArmState, obs_td: TensorDict) -> bool:
        if self.reward_classifier is not None:
            with torch.no_grad():
                out = self.reward_classifier(obs_td.unsqueeze(0).clone())
            if isinstance(out, TensorDictBase):  # a TensorDictModule such as SuccessClassifier
                out = out.get(getattr(self.reward_classifier, "out_key", "logit"))
            return bool(torch.sigmoid(out).reshape(-1)[0] > 0.5)
        if self.target_pos_m is not None:
            return bool(np.linalg.norm(state.tcp_pos - self.target_pos_m) < self.target_tol_m)
        return False

    def _guarded(self, fn):
        """Run ``fn``; on any error stop the arm first, then re-raise; ``step`` then needs a ``reset``."""
        try:
            with stop_on_sigint(self.arm.stop):
                return fn()
        except BaseException as err:
            # Disarmed watchdog and a stopped arm: refuse further steps until reset() re-arms it.
            self._state = None
            self._failure = f"{type(err).__name__}: {err}"
            if self.watchdog is not None:
                self.watchdog.close()
            try:
                self.arm.stop()
            finally:
                raise

    # -- EnvBase --------------------------------------------------------------------------
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        return self._guarded(self._do_reset)

    def _do_reset(self) -> TensorDict:
        self._state = None
        if self.watchdog is not None:
            self.watchdog.close()
        if self.arm.get_state().has_error:
            self.arm.clear_errors()
        set_phase = getattr(self.arm, "set_phase", None)
        if set_phase is not None:
            set_phase("reset")
        self._gripper_cmd, self._gripper_sent_m = 0.0, None
        if self.arm.gripper is not None:
            self.arm.gripper.open()
            self._gripper_sent_m = self.arm.gripper.max_width_m
        if self.home_q is not None:
            self.arm.move_to_joint_positions(self.home_q)
        state = self._read_state()
        home_pos = state.tcp_pos if self.home_pos is None else self.home_pos
        if self.home_quat is None:
            self.home_quat = state.tcp_quat
        noise = np.zeros(3)
        noise[:2] = self._rng.uniform(-self.reset_noise_m, self.reset_noise_m, size=2)  # SERL: xy only
        start = np.clip(home_pos + noise, self.safety.box_low_m, self.safety.box_high_m)
        self.arm.move_to_cartesian_pose(start, self.home_quat)
        # Python's full garbage collections take ~0.3 s in a process with torch and TorchRL loaded
        # (~400k objects) and came mid-episode every ~50 s, stalling the control loop by as much.
        # Freeze the heap here, where the arm holds still: the episode's automatic collections then
        # scan only the objects created since. The first reset freezes without collecting (a full
        # collection holds the GIL that long, starving in-process SDK threads: the Piper's CAN
        # reader, a robot server's idle stop); later ones first collect what the last episode left,
        # a scan of the unfrozen objects only. Cycles among frozen objects are not freed.
        if gc.get_freeze_count():
            gc.collect()
        gc.freeze()
        # in-process SDK threads catch up on what the collection held up before the state is read
        self._await_fresh_state()
        if set_phase is not None:
            set_phase("task")
        self._state = self._read_state()
        self._target_quat = np.asarray(self.home_quat, dtype=np.float64)
        self._steps = 0
        self._failure = None
        if self.watchdog is not None:
            self.watchdog.start()
        self._last_tick = time.monotonic()
        td = self._observe(self._state)
        td.update(self.full_done_spec.zero())
        return td

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self._state is None:
            if self._failure is not None:
                raise RuntimeError(f"the arm was stopped and its watchdog disarmed by {self._failure}; "
                                   "call reset() before step()")
            raise RuntimeError("call reset() before step()")
        # Refuse bad actions before the guarded block: nothing has been sent, nothing to stop.
        action = np.array(check_pick_action(tensordict.get("action")))
        return self._guarded(lambda: self._do_step(action))

    def _do_step(self, action: np.ndarray) -> TensorDict:
        # The pose observed at the end of the last step can be stale by a pause or a push: the
        # target and its step limit start from the pose read now, just before the command.
        current = self._read_state()
        pos, quat = self.safety.clip(
            current.tcp_pos + action[:3] * self.action_scale_m, self._target_quat,
            current_pos=current.tcp_pos, current_quat=current.tcp_quat,
        )
        with self._arm_lock:
            self.arm.set_cartesian_target(pos, quat)
            self._gripper_cmd = float(np.clip(self._gripper_cmd + action[3], 0.0, 1.0))
            self._command_gripper(self._gripper_cmd)
            if self.watchdog is not None:
                self.watchdog.feed()
        # Keep time: sleep to the next tick of a fixed grid, so one slow step does not shift all later ones.
        next_tick = self._last_tick + self.period_s
        now = time.monotonic()
        if now < next_tick:
            time.sleep(next_tick - now)
        else:
            next_tick = now  # overran: restart the grid instead of bursting to catch up
        self.step_periods_s.append(time.monotonic() - self._last_tick)
        self._last_tick = next_tick
        self._state = self._read_state()
        self._steps += 1
        td = self._observe(self._state)
        success = bool(td["success"])
        truncated = self._steps >= self.max_episode_steps
        td["reward"] = torch.tensor([float(success)], dtype=torch.float32)
        terminated = success and self.terminate_on_success
        td["terminated"] = torch.tensor([terminated])
        td["truncated"] = torch.tensor([truncated])
        td["done"] = torch.tensor([terminated or truncated])
        return td

    def close(self, *, raise_if_closed: bool = True) -> None:
        if self.watchdog is not None:
            self.watchdog.close()
        try:
            self.arm.stop()
            self.arm.disconnect()
        finally:
            for reader in self.readers.values():
                reader.close()
            super().close(raise_if_closed=raise_if_closed)


class FrankaEnv(RealArmEnv):
    """Franka Panda/FR3 through franky; see ``RealArmEnv`` for the loop and keys.

    Args:
        host: FCI address (``"127.0.0.1"`` with ``realtime=False`` for franky-sim).
        safety: defaults to ``FrankaArm.default_safety()``: SERL's pick-cube box
            ``x [0.2, 0.6], y [-0.3, 0.3], z [0.0, 0.5]`` m, tool pointing down (``[1, 0, 0, 0]``).
        arm_kwargs: extra ``FrankaArm`` arguments (``phase_gains``, ``relative_dynamics_factor``, ...).
    """

    def __init__(self, host: str = "172.16.0.2", realtime: bool = True, safety: SafetyLimits | None = None,
                 home_q=PANDA_HOME_Q, arm_kwargs: dict | None = None, **kwargs):
        arm = FrankaArm(host, realtime=realtime, **(arm_kwargs or {}))
        arm.connect()
        super().__init__(arm, safety or arm.default_safety(), home_q=home_q, **kwargs)


PIPER_HOME_Q = (0.0, 1.0, -1.0, 0.0, 0.9, 0.0)


class PiperEnv(RealArmEnv):
    """AgileX Piper through piper-sdk on a CAN channel; see ``RealArmEnv`` for the loop and keys.

    Args:
        can_channel, bustype: CAN interface (``"can0"``, ``"socketcan"``; ``"virtual"`` in tests).
        safety: defaults to ``PiperArm.default_safety()``: the box ``x [0.1, 0.35], y [-0.2, 0.2],
            z [0.1, 0.4]`` m around the home pose (tool at ~(0.19, 0, 0.36) m) with the home
            orientation as tilt centre.
        arm_kwargs: extra ``PiperArm`` arguments (``speed_percent``, ``feedback_timeout_s``, ...).
    """

    def __init__(self, can_channel: str = "can0", bustype: str = "socketcan", safety: SafetyLimits | None = None,
                 home_q=PIPER_HOME_Q, arm_kwargs: dict | None = None, **kwargs):
        arm = PiperArm(can_channel, bustype=bustype, **(arm_kwargs or {}))
        arm.connect()
        super().__init__(arm, safety or arm.default_safety(), home_q=home_q, **kwargs)
