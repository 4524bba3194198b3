"""Replay storage on disk: a checkpointer that writes only the rows in use, and flushing a staged
checkpoint to disk before it is published (used by the replay buffers and the run checkpoints).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tensordict import is_tensor_collection
from torchrl.data.replay_buffers.checkpointers import TensorStorageCheckpointer

from torchrl_serl.data.safe_loading import check_safe_to_load, load_tensor_memmap

_META = "storage_metadata.json"


class BufferCapacityError(ValueError):
    """A replay-buffer checkpoint was saved with another capacity than the buffer it is loaded into."""


def fsync_tree(root: str | Path) -> None:
    """Flush every file and directory under ``root`` to disk, so a rename publishes complete data
    (a power cut must not publish empty files or lose a directory entry)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(dirpath)


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (a rename or new file in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilledRowsCheckpointer(TensorStorageCheckpointer):
    """``dumps``/``loads`` for a ``LazyMemmapStorage``/``LazyTensorStorage`` that copy rows ``[0, len)`` only.

    TorchRL's default copies the full preallocated capacity: a 200k-transition pixel buffer holding
    10k transitions would write ~20 GB per checkpoint instead of ~1 GB. Rows past ``len`` are never
    sampled, so leaving them out loses nothing. Loading reads tensors only (:func:`~torchrl_serl.data.safe_loading.load_tensor_memmap`)
    and refuses a checkpoint of another capacity with :class:`BufferCapacityError`; checkpoints in
    TorchRL's full-storage layout still load.
    """

    def dumps(self, storage, path) -> None:
        if not storage.initialized:
            raise RuntimeError("cannot checkpoint a storage that was never written to")
        if not is_tensor_collection(storage._storage):  # a pytree storage: TorchRL's layout
            super().dumps(storage, path)
            return
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        storage._storage[: len(storage)].memmap(path / "rows", copy_existing=True)
        with open(path / _META, "w") as f:
            json.dump({"len": len(storage), "max_size": storage.max_size}, f)

    def loads(self, storage, path) -> None:
        path = Path(path)
        with open(path / _META) as f:
            meta = json.load(f)
        if "max_size" not in meta:  # TorchRL's layout: the whole storage (or a pytree of tensors) in place
            check_safe_to_load(path, f"replay-buffer checkpoint {path}")
            if (path / "meta.json").is_file():
                saved_rows = json.loads((path / "meta.json").read_text())["shape"][0]
                _check_capacity(path, saved_rows, meta["len"], storage.max_size)
            super().loads(storage, path)
            return
        _check_capacity(path, meta["max_size"], meta["len"], storage.max_size)
        rows = load_tensor_memmap(path / "rows", f"replay-buffer checkpoint {path}")
        if rows.shape[0] != meta["len"]:
            raise ValueError(f"corrupt replay-buffer checkpoint {path}: {rows.shape[0]} rows, metadata says {meta['len']}")
        if not storage.initialized:
            storage._init(rows[0])
        storage._storage[: meta["len"]] = rows
        storage._len = meta["len"]


def _check_capacity(path: Path, saved: int, filled: int, mine: int) -> None:
    if saved != mine:
        raise BufferCapacityError(
            f"the replay buffer in {path} was saved with capacity {saved} ({filled} rows filled); this run's buffer "
            f"has capacity {mine}. Resume with the capacity the run was started with (the recipes' "
            f"--buffer_size {saved})"
        )
