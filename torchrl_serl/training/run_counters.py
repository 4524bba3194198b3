"""Where a training run stands (its step and counters), saved with every checkpoint and restored on
resume, and when its periodic work (log, evaluation, checkpoint) is due.

A recipe keeps its loop in view and asks these helpers only the bookkeeping questions::

    run = RunCounters()
    if cfg.resume and run.resume(checkpointer, logger):
        print(f"resumed {run}")
    for batch in collector:
        run.advance(batch.numel())
        ...
        if run.due(cfg.log_every):
            logger.log(metrics, run.step)
        if run.due(cfg.checkpoint_every):
            run.save(checkpointer)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torchrl_serl.training.checkpoint import ResumeInfo, RunCheckpointer
    from torchrl_serl.training.logging import RunLogger


@dataclass
class RunCounters:
    """A run's counters; each checkpoint stores them and :meth:`resume` reads them back.

    Attributes:
        step: the run's clock, the x axis of its logs and checkpoints: env steps collected (BC and
            the reward classifier, which collect nothing: gradient steps).
        updates: learner updates made (one SERL learner step, ``utd_ratio`` critic updates, is one).
        episodes: episodes finished.
        interventions: env steps a human took over.
    """

    step: int = 0
    updates: int = 0
    episodes: int = 0
    interventions: int = 0
    _frames: int = field(default=0, repr=False, compare=False)  # steps added by the last advance()

    def advance(self, frames: int) -> None:
        """Add ``frames`` steps to the clock (one collector batch, or one gradient step)."""
        if frames < 0:
            raise ValueError(f"frames must be >= 0, got {frames}")
        self.step += frames
        self._frames = frames

    def due(self, every: int) -> bool:
        """Whether the last :meth:`advance` crossed a multiple of ``every`` steps (``every <= 0``:
        never), so periodic work keeps its period when a collector batch holds several steps."""
        return every > 0 and self.step // every != (self.step - self._frames) // every

    def updates_owed(self, updates_per_step: float, training_starts: int) -> int:
        """Learner updates due by :attr:`step` (SERL's ratio: ``updates_per_step`` per env step from
        ``training_starts`` on; a fractional ratio carries over) that :attr:`updates` does not cover."""
        due = int(updates_per_step * max(self.step - training_starts + 1, 0))
        return max(due - self.updates, 0)

    def updates_per_step(self, training_starts: int) -> float:
        """The ratio achieved: learner updates made per env step since ``training_starts``."""
        return self.updates / max(self.step - training_starts + 1, 1)

    def counters(self) -> dict[str, int]:
        """The counters a checkpoint stores beside ``step``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("step", "_frames")}

    def save(self, checkpointer: RunCheckpointer) -> None:
        """Checkpoint every component of ``checkpointer`` at ``step``, with the counters."""
        checkpointer.save(self.step, **self.counters())

    def resume(self, checkpointer: RunCheckpointer, logger: RunLogger | None = None) -> ResumeInfo | None:
        """Restore the newest checkpoint's components and counters; ``None`` (counters left at
        zero) when there is none. Log rows written after that checkpoint (by a run killed later)
        are dropped from ``logger``."""
        info = checkpointer.resume()
        if info is None:
            return None
        unknown = info.counters.keys() - self.counters().keys()
        if unknown:
            raise ValueError(f"checkpoint {info.path} holds counters {sorted(unknown)} that RunCounters does not "
                             f"know ({sorted(self.counters())}): was it written by another program?")
        self.step = info.step
        for name, value in info.counters.items():
            setattr(self, name, int(value))
        if logger is not None:
            logger.truncate_after(self.step)
        return info

    def __str__(self) -> str:
        return " ".join(f"{name}={value}" for name, value in {"step": self.step, **self.counters()}.items())


__all__ = ["RunCounters"]
