"""Learning curves from run logs: ``python -m torchrl_serl.training.plot <logdir> --out curves.png``.

Reads every run under ``logdir`` (a directory holding ``scalars/**.csv`` as written by
:class:`~torchrl_serl.training.logging.RunLogger`), groups runs whose names differ only by a
``_seed<N>`` suffix, and draws one panel per metric: each seed thin, the mean across seeds thick.
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


def _seed_mean(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds on the union of their steps (each seed interpolated, not extrapolated)."""
    end = min(steps[-1] for steps, _ in curves)
    grid = np.unique(np.concatenate([steps[steps <= end] for steps, _ in curves]))
    values = np.stack([np.interp(grid, steps, vals) for steps, vals in curves])
    return grid, values.mean(0)


def plot_runs(logdir: str | Path, out: str | Path, metrics: Sequence[str] = DEFAULT_METRICS) -> Path:
    """Write a PNG with one panel per metric that at least one run logged; return its path."""
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
    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 3.8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], present):
        for i, (group, members) in enumerate(sorted(groups.items())):
            color = colors[i % len(colors)]
            curves = [c for c in (load_metric(d, metric) for d in members.values()) if c is not None and len(c[0])]
            for steps, values in curves:
                ax.plot(steps, values, color=color, alpha=0.35 if len(curves) > 1 else 1.0, lw=1)
            if len(curves) > 1:
                grid, mean = _seed_mean(curves)
                ax.plot(grid, mean, color=color, lw=2.2, label=f"{group} (mean of {len(curves)})")
            elif curves:
                ax.lines[-1].set_label(group)
        ax.set_title(metric)
        ax.set_xlabel("env steps")
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
    args = parser.parse_args(argv)
    print(plot_runs(args.logdir, args.out, args.metrics))


if __name__ == "__main__":
    main()
