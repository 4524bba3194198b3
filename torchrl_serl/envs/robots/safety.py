"""Safety layer between a policy and a real arm.

``SafetyLimits`` validates and clips every tool target before a driver sees it,
``Watchdog`` stops the arm when commands stop arriving, ``stop_on_sigint`` stops it on Ctrl-C.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..rotations import normalize_quat, quat_angle, quat_slerp


def _check_real_dtype(name: str, dtype) -> None:
    # np.asarray(..., float64) would turn True into 1.0 and drop an imaginary part (NaN or not).
    if dtype.kind not in "fiu":
        raise ValueError(f"{name} has dtype {dtype}; only real numbers are accepted")


def check_finite_vector(name: str, value, size: int) -> np.ndarray:
    """``value`` as float64 ``[size]``; raises ``ValueError`` naming the bad entry otherwise.

    Bool, complex and non-numeric values are refused by dtype; integers are accepted (exact).
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bool or value.is_complex():
            raise ValueError(f"{name} has dtype {value.dtype}; only real numbers are accepted")
        value = (value.double() if value.is_floating_point() else value).numpy()
    raw = np.asarray(value)
    _check_real_dtype(name, raw.dtype)
    arr = raw.astype(np.float64)
    if arr.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {tuple(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN/inf: {arr.tolist()}; refusing to send it to the arm")
    return arr


def check_joint_limits(name: str, q: np.ndarray, low_rad, high_rad, margin_rad: float = 0.0) -> None:
    """Raises ``ValueError`` naming the first joint of ``q`` ``[n]`` [rad] outside ``[low + margin, high - margin]``."""
    low_rad, high_rad = np.asarray(low_rad, dtype=np.float64), np.asarray(high_rad, dtype=np.float64)
    for j, (value, low, high) in enumerate(zip(q, low_rad + margin_rad, high_rad - margin_rad), start=1):
        if not low - 1e-9 <= value <= high + 1e-9:
            raise ValueError(
                f"{name}: joint {j} = {value:.4f} rad is outside [{low:.4f}, {high:.4f}] rad (its joint limits "
                f"[{low_rad[j - 1]:.4f}, {high_rad[j - 1]:.4f}] rad less a {margin_rad} rad margin); "
                "not sent to the arm"
            )


@dataclass
class SafetyLimits:
    """Workspace box, orientation cone and per-step limits for tool targets.

    Args:
        box_low_m, box_high_m: ``[3]`` corners of the allowed tool-position box [m], base frame.
        reference_quat: ``[4]`` xyzw orientation the tool may tilt away from.
        max_tilt_rad: largest rotation away from ``reference_quat`` [rad].
        max_step_m: largest translation of the target per ``clip`` call [m].
        max_step_rad: largest rotation of the target per ``clip`` call [rad].
        joint_margin_rad: joint targets must stay this far inside the arm's joint limits [rad]
            (:meth:`check_joint_target`).
    """

    box_low_m: tuple = (0.2, -0.3, 0.0)
    box_high_m: tuple = (0.6, 0.3, 0.5)
    reference_quat: tuple = (1.0, 0.0, 0.0, 0.0)
    max_tilt_rad: float = 0.5
    max_step_m: float = 0.05
    max_step_rad: float = 0.2
    joint_margin_rad: float = 0.05

    def __post_init__(self):
        self.box_low_m = check_finite_vector("box_low_m", self.box_low_m, 3)
        self.box_high_m = check_finite_vector("box_high_m", self.box_high_m, 3)
        if np.any(self.box_low_m > self.box_high_m):
            raise ValueError(f"box_low_m {self.box_low_m.tolist()} exceeds box_high_m {self.box_high_m.tolist()}")
        self.reference_quat = normalize_quat(check_finite_vector("reference_quat", self.reference_quat, 4))
        for name in ("max_tilt_rad", "max_step_m", "max_step_rad"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        if not np.isfinite(self.joint_margin_rad) or self.joint_margin_rad < 0:
            raise ValueError(f"joint_margin_rad must be a finite number >= 0, got {self.joint_margin_rad}")

    def check_joint_target(self, q, joint_low_rad, joint_high_rad, tool_pose_at=None) -> np.ndarray:
        """A joint target ``q`` as float64 ``[n]``, refused unless it is ``joint_margin_rad`` inside the
        joint limits ``[n]`` [rad] and the tool pose there, ``tool_pose_at(q) -> (pos [3], quat [4])``
        (forward kinematics; skipped when it or its result is ``None``), is inside the box and the tilt cone.

        Only the goal is checked; the path the arm's joint interpolation takes to it is not.

        Raises:
            ValueError: naming the joint and its limit, or the coordinate and the box.
        """
        q = check_finite_vector("joint target", q, len(joint_low_rad))
        check_joint_limits("joint target", q, joint_low_rad, joint_high_rad, self.joint_margin_rad)
        tool_pose = None if tool_pose_at is None else tool_pose_at(q)
        if tool_pose is not None:
            self.check_in_workspace(*tool_pose, what=f"the tool pose at joint target {np.round(q, 4).tolist()} rad")
        return q

    def check_in_workspace(self, pos, quat, what: str = "the tool pose") -> None:
        """Raises ``ValueError`` when ``pos`` ``[3]`` [m] is outside the box or ``quat`` ``[4]`` outside the
        tilt cone."""
        pos = check_finite_vector("position", pos, 3)
        for axis, value, low, high in zip("xyz", pos, self.box_low_m, self.box_high_m):
            if not low - 1e-9 <= value <= high + 1e-9:
                raise ValueError(f"{what} is outside the workspace box: {axis} = {value:.4f} m, "
                                 f"allowed [{low:.4f}, {high:.4f}] m; not sent to the arm")
        tilt = quat_angle(self.reference_quat, normalize_quat(check_finite_vector("quaternion", quat, 4)))
        if tilt > self.max_tilt_rad + 1e-9:
            raise ValueError(f"{what} is tilted {tilt:.3f} rad from the reference orientation, "
                             f"allowed {self.max_tilt_rad} rad; not sent to the arm")

    def clip_to_workspace(self, pos, quat) -> tuple[np.ndarray, np.ndarray]:
        """``pos [3]`` clipped into the box and ``quat [4]`` into the tilt cone, without step limits.

        For the goal of a blocking move, which the arm's own planner reaches smoothly.

        Raises:
            ValueError: NaN/inf, non-real values or wrong shapes.
        """
        pos = np.clip(check_finite_vector("target position", pos, 3), self.box_low_m, self.box_high_m)
        quat = normalize_quat(check_finite_vector("target quaternion", quat, 4))
        tilt = quat_angle(self.reference_quat, quat)
        if tilt > self.max_tilt_rad:
            quat = quat_slerp(self.reference_quat, quat, self.max_tilt_rad / tilt)
        return pos, quat

    def clip(self, pos, quat, current_pos, current_quat) -> tuple[np.ndarray, np.ndarray]:
        """Validated and clipped target.

        The workspace box and the tilt cone are applied first, the per-step limits last, so
        no clip can undo the step limit: the result is never more than ``max_step_m`` /
        ``max_step_rad`` from the current pose. A tool outside the box (or tilted outside the
        cone) is brought back toward it by at most one step per call.

        Args:
            pos: ``[3]`` requested tool position [m]; quat: ``[4]`` requested xyzw orientation.
            current_pos, current_quat: the pose measured just before this command is sent;
                the per-step limits are measured from it (a pose read one control period
                earlier may be stale by a pause or a push).

        Returns:
            ``(pos [3], quat [4])`` within one step of the current pose, inside the box and the
            tilt cone whenever the current pose is within one step of them.

        Raises:
            ValueError: NaN/inf, non-real values or wrong shapes; nothing should be sent to the arm then.
        """
        pos, quat = self.clip_to_workspace(pos, quat)
        current_pos = check_finite_vector("current position", current_pos, 3)
        current_quat = normalize_quat(check_finite_vector("current quaternion", current_quat, 4))

        step = pos - current_pos
        dist = float(np.linalg.norm(step))
        if dist > self.max_step_m:
            pos = current_pos + step * (self.max_step_m / dist)
        turn = quat_angle(current_quat, quat)
        if turn > self.max_step_rad:
            quat = quat_slerp(current_quat, quat, self.max_step_rad / turn)
        return pos, quat


class Watchdog:
    """Calls ``on_timeout`` (e.g. ``arm.stop``) once if ``feed()`` is not called for ``timeout_s``.

    Runs a daemon thread; feeding again after a timeout re-arms it.
    """

    def __init__(self, on_timeout, timeout_s: float = 1.0, poll_s: float | None = None):
        if not np.isfinite(timeout_s) or timeout_s <= 0:
            raise ValueError(f"watchdog timeout_s must be > 0, got {timeout_s}")
        self.on_timeout = on_timeout
        self.timeout_s = float(timeout_s)
        self._poll_s = poll_s if poll_s is not None else min(0.05, timeout_s / 4)
        self._last_feed = time.monotonic()
        self._fired = False
        self.fire_count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Watchdog":
        self.feed()
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="arm-watchdog", daemon=True)
            self._thread.start()
        return self

    def feed(self) -> None:
        with self._lock:
            self._last_feed = time.monotonic()
            self._fired = False

    @property
    def fired(self) -> bool:
        return self._fired

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            with self._lock:
                expired = not self._fired and time.monotonic() - self._last_feed > self.timeout_s
                if expired:
                    self._fired = True
                    self.fire_count += 1
            if expired:
                # Never let a failing stop kill the thread: the next feed re-arms it.
                with contextlib.suppress(Exception):
                    self.on_timeout()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False


@contextlib.contextmanager
def stop_on_sigint(stop):
    """Within the block, Ctrl-C first calls ``stop()`` then raises ``KeyboardInterrupt`` as usual.

    The previous SIGINT handler is restored on exit. Outside the main thread (where Python does
    not deliver signals) this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        with contextlib.suppress(Exception):
            stop()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
