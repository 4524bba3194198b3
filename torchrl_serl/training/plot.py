"""Learning curves from run logs: ``python -m torchrl_serl.training.plot <logdir> --out curves.png``.

Reads every run under ``logdir`` (a directory holding ``scalars/**.csv`` as written by
:class:`~torchrl_serl.training.logging.RunLogger`), groups runs whose names differ only by a
``_seed<N>`` suffix, and draws one panel per metric and x axis (env steps; wall-clock minutes from
the runs' ``time/minutes`` log): each seed thin, the mean across seeds thick over the seeds'
min-max band.
Needs matplotlib (``pip install 'torchrl-serl[plot]'``).
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_METRICS = ("eval/success_rate", "eval/return", "train/episode_return", "train/success_rate")
MINUTES = "time/minutes"
X_AXES = ("steps", "minutes")
_SEED = re.compile(r"_seed\d+$")


def read_scalar_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of one CSV; a step logged twice keeps its last value, sorted by step."""
    latest: dict[int, float] = {}
    for line_no, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            step, value = line.split(",")
            latest[int(float(step))] = float(value)
        except ValueError:
            raise ValueError(f"{path}:{line_no}: expected 'step,value', got {line!r}") from None
    steps = np.array(sorted(latest), dtype=np.int64)
    return steps, np.array([latest[s] for s in steps], dtype=np.float64)


def find_runs(logdir: str | Path) -> dict[str, Path]:
    """``{run_name: run_dir}`` for every directory under ``logdir`` with a ``scalars`` folder."""
    logdir = Path(logdir)
    if not logdir.is_dir():
        raise FileNotFoundError(f"log directory {logdir} does not exist")
    runs = {}
    for scalars in sorted(logdir.rglob("scalars")):
        if scalars.is_dir():
            run_dir = scalars.parent
            runs[str(run_dir.relative_to(logdir)) if run_dir != logdir else run_dir.name] = run_dir
    return runs


def load_metric(run_dir: Path, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    path = run_dir / "scalars" / f"{metric}.csv"
    return read_scalar_csv(path) if path.is_file() else None


def _seed_spread(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, mean, min, max)`` over seeds on the union of their x values (each seed interpolated,
    not extrapolated)."""
    end = min(x[-1] for x, _ in curves)
    grid = np.unique(np.concatenate([x[x <= end] for x, _ in curves]))
    values = np.stack([np.interp(grid, x, vals) for x, vals in curves])
    return grid, values.mean(0), values.min(0), values.max(0)


def _in_minutes(run_dir: Path, curve: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """A curve over env steps re-indexed by wall-clock minutes (the run's ``time/minutes`` log)."""
    clock = load_metric(run_dir, MINUTES)
    if clock is None or not len(clock[0]):
        return None
    steps, values = curve
    return np.interp(steps, *clock), values


def plot_runs(
    logdir: str | Path, out: str | Path, metrics: Sequence[str] = DEFAULT_METRICS, x_axes: Sequence[str] = X_AXES
) -> Path:
    """Write a PNG with one panel per metric that at least one run logged and per x axis
    (``"steps"``: env steps; ``"minutes"``: wall clock from the runs' ``time/minutes`` log); each
    seed thin, the mean over seeds thick with the min-max band shaded. Return its path."""
    bad = [x for x in x_axes if x not in X_AXES]
    if bad or not x_axes:
        raise ValueError(f"x_axes must be a non-empty subset of {X_AXES}, got {list(x_axes)}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install 'torchrl-serl[plot]'") from err
    runs = find_runs(logdir)
    if not runs:
        raise FileNotFoundError(f"no run with a 'scalars' directory under {logdir}")
    groups: dict[str, dict[str, Path]] = defaultdict(dict)
    for name, run_dir in runs.items():
        groups[_SEED.sub("", name)][name] = run_dir
    present = [m for m in metrics if any(load_metric(d, m) is not None for d in runs.values())]
    if not present:
        raise ValueError(f"none of the metrics {list(metrics)} was logged by the runs under {logdir}")
    fig, axes = plt.subplots(len(x_axes), len(present), figsize=(5 * len(present), 3.8 * len(x_axes)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, x_axis in zip(axes, x_axes):
        for ax, metric in zip(row, present):
            for i, (group, members) in enumerate(sorted(groups.items())):
                color = colors[i % len(colors)]
                curves = []
                for run_dir in members.values():
                    curve = load_metric(run_dir, metric)
                    if curve is not None and len(curve[0]) and x_axis == "minutes":
                        curve = _in_minutes(run_dir, curve)
                    if curve is not None and len(curve[0]):
                        curves.append(curve)
                for x, values in curves:
                    ax.plot(x, values, color=color, alpha=0.35 if len(curves) > 1 else 1.0, lw=1)
                if len(curves) > 1:
                    grid, mean, low, high = _seed_spread(curves)
                    ax.fill_between(grid, low, high, color=color, alpha=0.15)
                    ax.plot(grid, mean, color=color, lw=2.2, label=f"{group} (mean of {len(curves)})")
                elif curves:
                    ax.lines[-1].set_label(group)
            ax.set_title(metric)
            ax.set_xlabel("env steps" if x_axis == "steps" else "wall-clock minutes")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir", help="directory holding one or more runs")
    parser.add_argument("--out", default="curves.png", help="output PNG path (default: curves.png)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="scalar names to plot")
    parser.add_argument("--x", nargs="+", default=list(X_AXES), choices=X_AXES,
                        help="x axes, one row of panels each (default: steps and minutes)")
    args = parser.parse_args(argv)
    print(plot_runs(args.logdir, args.out, args.metrics, args.x))


if __name__ == "__main__":
    main()
