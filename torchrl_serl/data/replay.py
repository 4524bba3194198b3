"""Online + demo replay buffer with an exact demo fraction per batch (RLPD), and crash-safe checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import LazyMemmapStorage, OfflineToOnlineReplayBuffer, TensorDictReplayBuffer

from torchrl_serl.data.safe_loading import check_safe_to_load
from torchrl_serl.data.storage_checkpointer import BufferCapacityError, FilledRowsCheckpointer, fsync_dir, fsync_tree
from torchrl_serl.data.pixel_storage import FrameDedupReplayBuffer

# Keys the buffers add themselves; they are not part of the data contract between demos and online.
_BOOKKEEPING_KEYS = {"index", "_has_next_frame"}
_LATEST = "LATEST"
# Dropped on write so that demos recorded with env.rollout (scripted or teleoperated) and online
# data from a Collector (with or without the Intervention transform) share one layout: collector
# trajectory ids, buffer sample indices, and Intervention's flag and policy proposal (the learner reads
# neither; InterventionRouter reads the flag before writing).
DROPPED_KEYS = (
    "collector",
    "index",
    "intervention",
    "policy_action",
    ("next", "intervention"),
    ("next", "policy_action"),
)


def _layout(data: TensorDictBase) -> dict[str, str]:
    """Key name -> per-transition shape and dtype, e.g. ``{"front": "[3, 128, 128] uint8"}``."""
    layout = {}
    for key, value in data.items(True, True):
        name = ".".join(key) if isinstance(key, tuple) else key
        if name not in _BOOKKEEPING_KEYS:
            layout[name] = f"{list(value.shape[data.ndim:])} {str(value.dtype).replace('torch.', '')}"
    return layout


class OnlineDemoReplayBuffer(OfflineToOnlineReplayBuffer):
    """Online and demo buffers sampled with an exact demo fraction per batch (RLPD: 50/50).

    Extends TorchRL's :class:`~torchrl.data.OfflineToOnlineReplayBuffer` (exact split, ``anneal``,
    read-side ``transform``) with a *mutable* demo side: ``extend_demos`` appends demonstrations or
    human interventions during training. ``sample()`` draws exactly ``round(demo_fraction * B)`` demo
    transitions followed by the online ones, ``[B]``; while the online buffer is still empty it draws
    all ``B`` from the demos (TorchRL's behaviour).

    Both sides are memory-mapped. With ``pixel_keys`` they are :class:`FrameDedupReplayBuffer`\\ s
    (uint8 frames stored once, ``("next", cam)`` rebuilt at sampling).

    ``save(path)``/``load(path)`` checkpoint everything (contents, write cursors, sampling RNGs,
    fraction, the transform's state such as :class:`RandomShift`'s generator): the same ``sample()``
    sequence follows a restore (without ``prefetch``). Saves are crash-safe (see :meth:`save`).

    ``prefetch=True`` draws the next batch (same size as the last) in a background thread while the
    caller trains on this one, as SERL's learner does (its replay iterator keeps a queue of
    batches): the sampling and the demo/online concatenation, ~10% of a cached-feature learner step
    on a CPU, leave the learner's critical path. A prefetched batch is drawn from the buffer as the
    previous ``sample()`` left it: a write waits for the draw in flight, so the batches do not
    depend on thread timing, and they are the batches of a buffer without prefetch whose samples
    each come one write earlier (in the recipes, at most one actor batch). A restore discards
    the prefetched batch: the restored buffer's first sample is a fresh draw, not the one an
    uninterrupted run would have used.

    Args:
        capacity: online buffer rows.
        demo_capacity: demo buffer rows.

    Keyword Args:
        demo_fraction: fraction of each batch drawn from demos, in ``(0, 1)``.
        batch_size: default ``sample`` size (SERL: 256).
        pixel_keys: camera keys stored once as uint8 (empty for state tasks).
        scratch_dir: directory for the memory-mapped storages (default: a fresh temporary directory).
        seed: seeds the two sampling generators.
        transform: applied to each sampled batch (e.g. ``RandomShift(["front", "wrist"])``).
        drop_keys: entries removed before storing (default :data:`DROPPED_KEYS`); every other key
            must match between the two sides.
        prefetch: draw the next batch in a background thread (see above).
    """

    def __init__(
        self,
        capacity: int,
        demo_capacity: int,
        *,
        demo_fraction: float = 0.5,
        batch_size: int = 256,
        pixel_keys: Sequence[NestedKey] = (),
        scratch_dir: str | Path | None = None,
        seed: int = 0,
        transform=None,
        drop_keys: Sequence[NestedKey] = DROPPED_KEYS,
        prefetch: bool = False,
    ):
        if not 0.0 < demo_fraction < 1.0:
            raise ValueError(f"demo_fraction must be in (0, 1), got {demo_fraction}")
        if capacity < 2 or demo_capacity < 2:
            raise ValueError(f"capacity and demo_capacity must be >= 2, got {capacity} and {demo_capacity}")
        self.scratch_dir = Path(scratch_dir) if scratch_dir is not None else Path(tempfile.mkdtemp(prefix="serl_rb_"))
        self.pixel_keys = list(pixel_keys)
        self.drop_keys = tuple(drop_keys)
        self.capacity, self.demo_capacity, self.seed = capacity, demo_capacity, seed
        online = self._make_side(capacity, "online", seed)
        demos = self._make_side(demo_capacity, "demos", seed + 1)
        # The parent builds a throwaway online buffer (lazy, never allocated) that is replaced below.
        super().__init__(demos, online_capacity=1, offline_fraction=demo_fraction, batch_size=batch_size, transform=transform)
        self._online_buffer = online
        self._keys: dict[str, str] | None = None
        # one worker: batches are drawn in the order they are asked for, from one sampling RNG per side
        self._prefetcher = ThreadPoolExecutor(1, thread_name_prefix="replay-prefetch") if prefetch else None
        self._prefetched: tuple[int, Future] | None = None  # (batch size, the draw in flight)

    def _make_side(self, capacity: int, name: str, seed: int) -> TensorDictReplayBuffer:
        generator = torch.Generator().manual_seed(seed)
        scratch = self.scratch_dir / name
        if self.pixel_keys:
            return FrameDedupReplayBuffer(capacity, self.pixel_keys, scratch, generator=generator)
        return TensorDictReplayBuffer(
            storage=LazyMemmapStorage(capacity, scratch_dir=scratch), checkpointer=FilledRowsCheckpointer(), generator=generator
        )

    @property
    def demo_buffer(self) -> TensorDictReplayBuffer:
        """The demo side (mutable: ``extend_demos`` writes here)."""
        return self._offline_buffer

    @property
    def demo_fraction(self) -> float:
        return self._offline_fraction

    def _check_keys(self, data: TensorDictBase, where: str) -> None:
        layout = _layout(data)
        if self._keys is None:
            self._keys = layout
            return
        missing, unexpected = sorted(self._keys.keys() - layout.keys()), sorted(layout.keys() - self._keys.keys())
        if missing or unexpected:
            raise ValueError(
                f"keys of the {where} data do not match the buffer's: missing {missing}, unexpected {unexpected} "
                "(demo and online transitions must share one TED layout)"
            )
        differ = {k: (layout[k], self._keys[k]) for k in layout if layout[k] != self._keys[k]}
        if differ:
            details = ", ".join(f"{k}: {got} (buffer has {want})" for k, (got, want) in sorted(differ.items()))
            raise ValueError(f"shape/dtype of the {where} data do not match the buffer's: {details}")

    def _prepare(self, data: TensorDictBase, where: str) -> TensorDictBase:
        data = data.exclude(*self.drop_keys)
        self._check_keys(data, where)
        # The pixel storage reads [N_envs, T] trajectory by trajectory; a flat storage needs [N].
        return data if self.pixel_keys else data.reshape(-1)

    def extend(self, data: TensorDictBase) -> torch.Tensor:
        """Append online transitions ``[T]`` or ``[N_envs, T]`` (``drop_keys`` entries are dropped)."""
        data = self._prepare(data, "online")
        self._wait_prefetched()
        return self._online_buffer.extend(data)

    def extend_demos(self, data: TensorDictBase) -> torch.Tensor:
        """Append demonstrations or intervention transitions to the demo side."""
        data = self._prepare(data, "demo")
        self._wait_prefetched()
        return self._offline_buffer.extend(data)

    def sample(self, batch_size: int | None = None) -> TensorDictBase:
        """``[B]`` batch: the first ``round(demo_fraction * B)`` rows are demos, the rest online."""
        if len(self._offline_buffer) == 0:
            raise RuntimeError(
                f"the demo buffer is empty but demo_fraction={self._offline_fraction}: "
                "call extend_demos (e.g. with load_demos(path)) before sampling"
            )
        if self._prefetcher is None:
            return super().sample(batch_size)
        batch_size = batch_size or self._batch_size
        if self._prefetched is not None and self._prefetched[0] == batch_size:
            batch = self._prefetched[1].result()
        else:
            self._drop_prefetched()
            batch = super().sample(batch_size)
        self._prefetched = (batch_size, self._prefetcher.submit(super().sample, batch_size))
        return batch

    def _wait_prefetched(self) -> None:
        """Let the draw in flight finish (it keeps its batch for the next sample)."""
        if self._prefetched is not None:
            self._prefetched[1].exception()

    def _drop_prefetched(self) -> None:
        """Wait for the draw in flight (it holds the sides' locks and advances their RNGs), then forget
        it (an error of a dropped draw is not this caller's)."""
        self._wait_prefetched()
        self._prefetched = None

    def save(self, path: str | Path) -> Path:
        """Checkpoint the whole buffer under ``path``; returns the version directory written.

        Crash-safe: the checkpoint is written to a temporary directory, flushed to disk, renamed to
        ``path/vNNNNNN`` and only then published by atomically replacing ``path/LATEST``. A crash at any
        point leaves ``LATEST`` naming the previous complete checkpoint. Older versions are removed
        after publication.
        """
        self._wait_prefetched()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        versions = sorted(p.name for p in path.glob("v[0-9]*") if p.is_dir())
        name = f"v{int(versions[-1][1:]) + 1 if versions else 1:06d}"
        tmp = path / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for side, buffer in (("online", self._online_buffer), ("demos", self._offline_buffer)):
            if len(buffer):  # TorchRL cannot dump a never-written (uninitialised) storage
                buffer.dumps(tmp / side)
        if isinstance(self._transform, torch.nn.Module):
            torch.save(self._transform.state_dict(), tmp / "transform.pt")
        with open(tmp / "meta.json", "w") as f:
            json.dump(self._meta(), f)
        fsync_tree(tmp)
        os.rename(tmp, path / name)
        with open(path / f"{_LATEST}.tmp", "w") as f:
            f.write(name)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path / f"{_LATEST}.tmp", path / _LATEST)
        fsync_dir(path)
        for old in path.iterdir():
            if old.is_dir() and old.name != name and (old.name.startswith(".tmp-") or old.name in versions):
                shutil.rmtree(old, ignore_errors=True)
        return path / name

    def _meta(self) -> dict:
        return {
            "capacity": self.capacity,
            "demo_capacity": self.demo_capacity,
            "pixel_keys": [k if isinstance(k, str) else list(k) for k in self.pixel_keys],
            "demo_fraction": self._offline_fraction,
            "base_demo_fraction": self._base_offline_fraction,
            "batch_size": self._batch_size,
            "keys": self._keys,
        }

    def load(self, path: str | Path) -> None:
        """Restore the checkpoint that ``path/LATEST`` names (written by :meth:`save`).

        Raises :class:`~torchrl_serl.data.safe_loading.UnsafeFileError` before loading anything if a file
        in it would run code when loaded (pickled objects, non-tensor fields), and
        :class:`~torchrl_serl.data.storage_checkpointer.BufferCapacityError` when it was saved with other capacities.
        """
        self._drop_prefetched()
        path = Path(path)
        latest = path / _LATEST
        if not latest.is_file():
            raise FileNotFoundError(f"no replay-buffer checkpoint at {path} (missing {latest})")
        version = path / latest.read_text().strip()
        with open(version / "meta.json") as f:
            meta = json.load(f)
        mine = self._meta()
        for key in ("capacity", "demo_capacity"):
            if meta[key] != mine[key]:
                option = " (the recipes' --buffer_size)" if key == "capacity" else ""
                raise BufferCapacityError(
                    f"checkpoint {version} has {key}={meta[key]!r}, this buffer has {mine[key]!r}: resume with the "
                    f"{key}{option} the run was started with"
                )
        if meta["pixel_keys"] != mine["pixel_keys"]:
            raise ValueError(f"checkpoint {version} has pixel_keys={meta['pixel_keys']!r}, this buffer has {mine['pixel_keys']!r}")
        check_safe_to_load(version, f"replay-buffer checkpoint {version}")
        for side, buffer in (("online", self._online_buffer), ("demos", self._offline_buffer)):
            if (version / side).is_dir():
                buffer.loads(version / side)
            else:
                buffer.empty()
        if (version / "transform.pt").exists() and isinstance(self._transform, torch.nn.Module):
            self._transform.load_state_dict(torch.load(version / "transform.pt", weights_only=True))
        self._offline_fraction = meta["demo_fraction"]
        self._base_offline_fraction = meta["base_demo_fraction"]
        self._batch_size = meta["batch_size"]
        self._keys = meta["keys"]
