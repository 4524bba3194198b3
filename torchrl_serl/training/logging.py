"""Run logging: CSV by default (TorchRL ``CSVLogger``), wandb when asked, and a progress bar.

Layout of a run directory ``<logdir>/<exp_name>/``::

    config.json                 the full run configuration
    scalars/<group>/<name>.csv  one ``step,value`` row per log call (TorchRL CSVLogger format)
    videos/                     evaluation videos
    checkpoints/                see :mod:`torchrl_serl.training.checkpoint`

``python -m torchrl_serl.training.plot <logdir>`` turns the CSVs into learning curves.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

from tensordict import TensorDictBase
from torchrl.record.loggers import CSVLogger, Logger

_WANDB_MODES = ("online", "offline")


class RunLogger:
    """Scalars to CSV (and wandb), plus a tqdm bar with steps/s, success rate and return.

    Args:
        logdir: parent directory of runs.
        exp_name: run name; the run directory is ``logdir/exp_name``.
        config: JSON-friendly run configuration, written to ``config.json`` (and to wandb).
        total_steps: length of the progress bar in env steps.
        start_step: where a resumed run starts (the bar and steps/s count from there).
        use_wandb: also log to wandb; ``wandb_mode="offline"`` writes under the run directory
            and needs no network.
        progress: show the tqdm bar (off for non-interactive logs).

    ``log(metrics, step)`` writes every finite scalar; ``state_dict``/``load_state_dict``
    let a checkpoint carry the CSV logger's counters.
    """

    def __init__(
        self,
        logdir: str | os.PathLike,
        exp_name: str,
        config: Mapping[str, Any] | None = None,
        total_steps: int | None = None,
        start_step: int = 0,
        use_wandb: bool = False,
        wandb_mode: str = "offline",
        wandb_project: str = "torchrl-serl",
        progress: bool = True,
    ) -> None:
        if not exp_name:
            raise ValueError("exp_name must be a non-empty run name")
        if wandb_mode not in _WANDB_MODES:
            raise ValueError(f"wandb_mode must be one of {_WANDB_MODES}, got {wandb_mode!r}")
        self.run_dir = Path(logdir) / exp_name
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if config is not None:
            (self.run_dir / "config.json").write_text(json.dumps(dict(config), indent=2, default=str))
        self.loggers: list[Logger] = [CSVLogger(exp_name=exp_name, log_dir=str(logdir), video_format="pt")]
        if use_wandb:
            self.loggers.append(self._make_wandb(exp_name, config, wandb_mode, wandb_project))
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
        self._last_step = start_step
        self._last_time = time.perf_counter()
        self._postfix: dict[str, str] = {}

    def _make_wandb(self, exp_name, config, mode, project) -> Logger:
        try:
            from torchrl.record.loggers.wandb import WandbLogger
            import wandb  # noqa: F401
        except ImportError as err:
            raise ImportError(
                "use_wandb=True needs wandb: pip install 'torchrl-serl[wandb]' (or pip install wandb)"
            ) from err
        return WandbLogger(
            exp_name=exp_name,
            offline=mode == "offline",
            save_dir=str(self.run_dir),
            project=project,
            config=dict(config or {}),
            log_env_packages=False,
        )

    @property
    def csv(self) -> CSVLogger:
        return self.loggers[0]  # type: ignore[return-value]

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log scalar ``metrics`` (names like ``train/return``) at env step ``step``."""
        for name, value in metrics.items():
            value = float(value)
            if not math.isfinite(value):
                continue
            for logger in self.loggers:
                logger.log_scalar(name, value, step=step)

    def log_video(self, name: str, frames, step: int) -> None:
        """``frames``: uint8 ``[T, 3, H, W]`` (TorchRL loggers' video layout, batch added here)."""
        for logger in self.loggers:
            logger.log_video(name, frames.unsqueeze(0), step=step)

    def progress(self, step: int, **postfix: float) -> None:
        """Move the bar to ``step`` and show steps/s since the last call plus ``postfix``."""
        now = time.perf_counter()
        if step > self._last_step and now > self._last_time:
            self._postfix["sps"] = f"{(step - self._last_step) / (now - self._last_time):.1f}"
        for key, value in postfix.items():
            if value is not None and math.isfinite(float(value)):
                self._postfix[key] = f"{float(value):.3g}"
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(self._postfix, refresh=False)
        self._last_step, self._last_time = step, now

    def truncate_after(self, step: int) -> None:
        """Drop CSV rows logged after ``step`` (a killed run logged past its last checkpoint)."""
        scalars = self.run_dir / "scalars"
        if not scalars.is_dir():
            return
        for path in scalars.rglob("*.csv"):
            lines = path.read_text().splitlines()
            kept = [line for line in lines if line and int(float(line.split(",")[0])) <= step]
            if len(kept) != len(lines):
                tmp = path.with_suffix(".csv.tmp")
                tmp.write_text("".join(line + "\n" for line in kept))
                os.replace(tmp, path)
        experiment = self.csv.experiment
        for name, rows in experiment.scalars.items():
            experiment.scalars[name] = [row for row in rows if row[0] <= step]
        # CSVExperiment keeps its files open in append mode; reopen after the rewrite.
        for handle in experiment.files.values():
            handle.close()
        experiment.files.clear()

    def last_value(self, name: str) -> float | None:
        """The last value logged under ``name`` (after a resume: at or before its checkpoint's
        step), or ``None``. A resumed run continues its ``time/minutes`` from it."""
        rows = self.csv.experiment.scalars.get(name)
        return float(rows[-1][1]) if rows else None

    def state_dict(self) -> dict[str, Any]:
        return self.csv.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.csv.load_state_dict(state)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        for logger in self.loggers[1:]:
            finish = getattr(getattr(logger, "experiment", None), "finish", None)
            if finish is not None:
                finish()
        for handle in self.csv.experiment.files.values():
            handle.close()
        self.csv.experiment.files.clear()


class EpisodeTracker:
    """Return, success and length of the training episodes, from collector batches.

    A batch is ``[T]`` transitions of TorchRL collector output; with ``("collector", "traj_ids")``
    (one id per trajectory, across all of a multi-process collector's actors) each trajectory is
    followed on its own, so the interleaved batches of many actors are counted right; without it,
    the batch is one env's consecutive steps. ``update`` returns the episodes that ended in it. An
    episode succeeds if ``("next", "success")`` was true at any step.
    """

    def __init__(self) -> None:
        self._open: dict[int, dict[str, float]] = {}  # trajectory id -> return, success, length so far
        self.episodes = 0

    def update(self, batch: TensorDictBase) -> list[dict[str, float]]:
        rewards = batch["next", "reward"].reshape(-1).tolist()
        dones = batch["next", "done"].reshape(-1).tolist()
        success = batch.get(("next", "success"), None)
        successes = success.reshape(-1).tolist() if success is not None else [False] * len(rewards)
        traj_ids = batch.get(("collector", "traj_ids"), None)
        traj_ids = traj_ids.reshape(-1).tolist() if traj_ids is not None else [0] * len(rewards)
        finished = []
        for traj, reward, done, succ in zip(traj_ids, rewards, dones, successes):
            episode = self._open.setdefault(traj, {"return": 0.0, "success": 0.0, "length": 0})
            episode["return"] += reward
            episode["success"] = max(episode["success"], float(bool(succ)))
            episode["length"] += 1
            if done:
                finished.append(self._open.pop(traj))
                self.episodes += 1
        return finished

    def reset(self) -> None:
        """Forget the episodes in flight (the envs were reset)."""
        self._open.clear()


__all__ = ["EpisodeTracker", "RunLogger"]
