"""3Dconnexion SpaceMouse as an intervention source, through ``pyspacemouse``'s report parser."""

from __future__ import annotations

from collections.abc import Sequence

import torch

_AXES = ("x", "y", "z", "roll", "pitch", "yaw")


class SpaceMouseSource:
    """Read a SpaceMouse and turn it into an action ``[A]`` in ``[-1, 1]`` while the operator touches it.

    Each :meth:`poll` drains every pending HID report (the device reports at ~100 Hz, the control
    loop runs at ~10 Hz) so the action reflects the latest puck position, then maps axes to action
    entries: ``axes`` names the SpaceMouse axis for each motion entry (``"-y"`` flips a sign). The
    last action entry is the gripper: left button -> ``+1`` (close), right button -> ``-1`` (open),
    else ``0`` (hold), matching ``gripper <- clip(gripper + g, 0, 1)``. The operator intervenes when
    the motion exceeds ``deadzone`` (inf-norm) or a button is pressed; otherwise ``poll`` returns None.

    Args:
        device: an open ``pyspacemouse.SpaceMouseDevice`` (default: ``pyspacemouse.open`` with the
            right-handed Z-up convention; needs ``libhidapi``).
        axes: SpaceMouse axis per motion entry: 3 (xyz, 4-D actions) or 6 (xyz + rotation, 7-D).
        deadzone: motion below this (in [0, 1)) counts as untouched.
        scale: multiplier on the motion entries before clipping to ``[-1, 1]``.
        max_reports: most HID reports drained per poll.
    """

    def __init__(
        self,
        device=None,
        axes: Sequence[str] = ("x", "y", "z"),
        deadzone: float = 0.05,
        scale: float = 1.0,
        max_reports: int = 256,
    ):
        for axis in axes:
            if axis.lstrip("-") not in _AXES:
                raise ValueError(f"unknown SpaceMouse axis {axis!r}; use one of {_AXES}, optionally prefixed by '-'")
        if len(axes) not in (3, 6):
            raise ValueError(f"axes must name 3 (xyz) or 6 (xyz + rotation) axes, got {len(axes)}")
        if not 0.0 <= deadzone < 1.0:
            raise ValueError(f"deadzone must be in [0, 1), got {deadzone}")
        if device is None:
            import pyspacemouse

            device = pyspacemouse.open(axis_convention=pyspacemouse.AxisConvention.HID_Z_UP)
            if device is None:
                raise RuntimeError("no SpaceMouse found (pyspacemouse.open returned None)")
        self.device = device
        self.axes = list(axes)
        self.deadzone, self.scale, self.max_reports = deadzone, scale, max_reports
        self.action_dim = len(axes) + 1

    def _drain(self):
        state = self.device.read()
        for _ in range(self.max_reports - 1):
            stamp = state.t
            state = self.device.read()
            if state.t == stamp:  # no new report: the device is non-blocking and was empty
                break
        return state

    def poll(self) -> torch.Tensor | None:
        """The operator's action ``[A]`` (float32, in ``[-1, 1]``), or None when not intervening."""
        state = self._drain()
        motion = torch.tensor(
            [(-1.0 if a.startswith("-") else 1.0) * getattr(state, a.lstrip("-")) for a in self.axes]
        )
        buttons = list(state.buttons)
        left, right = bool(buttons[0]) if buttons else False, bool(buttons[1]) if len(buttons) > 1 else False
        if motion.abs().max() <= self.deadzone and not (left or right):
            return None
        gripper = 1.0 if left else (-1.0 if right else 0.0)
        return torch.cat([(motion * self.scale).clamp(-1, 1), torch.tensor([gripper])]).float()

    def close(self) -> None:
        self.device.close()
