"""Storage checkpointer that writes only the rows in use, not the whole preallocated capacity."""

from __future__ import annotations

import json
from pathlib import Path

from tensordict import TensorDict
from torchrl.data.replay_buffers.checkpointers import TensorStorageCheckpointer

_META = "storage_metadata.json"


class FilledRowsCheckpointer(TensorStorageCheckpointer):
    """``dumps``/``loads`` for a ``LazyMemmapStorage`` that copy rows ``[0, len)`` only.

    TorchRL's default copies the full memory-mapped capacity: a 200k-transition pixel buffer holding
    10k transitions would write ~20 GB per checkpoint instead of ~1 GB. Rows past ``len`` are never
    sampled, so leaving them out loses nothing.
    """

    def dumps(self, storage, path) -> None:
        if not storage.initialized:
            raise RuntimeError("cannot checkpoint a storage that was never written to")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        storage._storage[: len(storage)].memmap(path / "rows", copy_existing=True)
        with open(path / _META, "w") as f:
            json.dump({"len": len(storage), "max_size": storage.max_size}, f)

    def loads(self, storage, path) -> None:
        path = Path(path)
        with open(path / _META) as f:
            meta = json.load(f)
        if meta["max_size"] != storage.max_size:
            raise ValueError(f"checkpoint at {path} has {meta['max_size']} rows, this storage {storage.max_size}")
        rows = TensorDict.load_memmap(path / "rows")
        if not storage.initialized:
            storage._init(rows[0])
        storage._storage[: meta["len"]] = rows
        storage._len = meta["len"]
