"""Keyboard as an intervention source: key presses from a queue (terminal reader, GUI hook or test)."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Mapping

import torch

# SERL-style layout for 4-D actions (dx, dy, dz, g): WASD in the plane, R/F up/down, C/O close/open.
DEFAULT_KEY_MAP: dict[str, tuple[float, ...]] = {
    "w": (1, 0, 0, 0),
    "s": (-1, 0, 0, 0),
    "a": (0, 1, 0, 0),
    "d": (0, -1, 0, 0),
    "r": (0, 0, 1, 0),
    "f": (0, 0, -1, 0),
    "c": (0, 0, 0, 1),
    "o": (0, 0, 0, -1),
}


class KeyboardSource:
    """Turn the keys pressed since the last :meth:`poll` into an action ``[A]`` in ``[-1, 1]``.

    Every pending key in ``keys`` is taken; the mapped vectors are summed and clipped. A poll with
    no mapped key returns None (no intervention). Unknown keys are ignored so that a stray key does
    not stop the robot.

    Args:
        keys: a ``queue.Queue`` of single-character strings (filled by :class:`TerminalKeyReader`,
            a GUI key hook, or a test).
        key_map: key -> action vector, all of the same length ``A``.
        scale: multiplier on the summed vector before clipping.
    """

    def __init__(self, keys: queue.Queue, key_map: Mapping[str, tuple[float, ...]] = DEFAULT_KEY_MAP, scale: float = 1.0):
        lengths = {len(v) for v in key_map.values()}
        if len(lengths) != 1:
            raise ValueError(f"all key_map vectors must have one length, got lengths {sorted(lengths)}")
        self.keys = keys
        self.key_map = {k: torch.tensor(v, dtype=torch.float32) for k, v in key_map.items()}
        self.scale = scale
        self.action_dim = lengths.pop()

    def poll(self) -> torch.Tensor | None:
        pressed = []
        while True:
            try:
                key = self.keys.get_nowait()
            except queue.Empty:
                break
            if key.lower() in self.key_map:
                pressed.append(self.key_map[key.lower()])
        if not pressed:
            return None
        return (torch.stack(pressed).sum(0) * self.scale).clamp(-1, 1)


class TerminalKeyReader:
    """Background thread putting each character read from a terminal (or any fd) into a queue.

    On a TTY the terminal is switched to cbreak mode (keys arrive without Enter) and restored by
    :meth:`stop`. Use as a context manager around the control loop.

    Args:
        keys: queue that receives single-character strings.
        fd: file descriptor to read (default: stdin).
    """

    def __init__(self, keys: queue.Queue, fd: int | None = None):
        self.keys = keys
        self.fd = fd if fd is not None else 0
        self._saved_tty = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TerminalKeyReader:
        if os.isatty(self.fd):
            import termios
            import tty

            self._saved_tty = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        self._thread.start()
        return self

    def _run(self) -> None:
        import select

        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if not ready:
                continue
            chunk = os.read(self.fd, 64)
            if not chunk:  # end of file
                return
            for ch in chunk.decode(errors="ignore"):
                self.keys.put(ch)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        if self._saved_tty is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved_tty)
            self._saved_tty = None

    def __enter__(self) -> TerminalKeyReader:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
