"""Loading saved data without running code, a storage checkpointer that writes only the rows in use,
and flushing a staged checkpoint to disk before it is published.

Files under a run directory, a demo folder or a checkpoint can be replaced by anyone who can write
there. Three loaders in the stack would then run code: tensordict unpickles non-tensor fields of a
memory-mapped TensorDict (``*.pickle`` sidecars), TorchRL's replay buffers ``pickle.load`` their
``prefetch.pkl``, and ``torch.load`` without ``weights_only=True`` unpickles. The checks here read
only JSON and pickle *opcodes* (never unpickle), so they are safe to run on a hostile file, and
refuse anything that would import or call code when loaded.
"""

from __future__ import annotations

import json
import os
import pickletools
from pathlib import Path

from tensordict import TensorDict, is_tensor_collection
from torchrl.data.replay_buffers.checkpointers import TensorStorageCheckpointer

_META = "storage_metadata.json"
_TENSORDICT_TYPE = str(TensorDict)
# Pickle opcodes that import a name or call one; a pickle without them can only build None, bools,
# numbers, strings, bytes, lists, tuples, dicts and sets.
_CODE_OPCODES = frozenset({
    "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX",
    "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID",
})
# tensordict formats whose metadata a directory walk cannot read (zip archive, consolidated blob);
# nothing in this package writes them.
_OPAQUE_SUFFIXES = (".tdz", ".tdc")


class UnsafeFileError(ValueError):
    """A saved file would run code when loaded (pickled objects, non-tensor TensorDict fields)."""


class BufferCapacityError(ValueError):
    """A replay-buffer checkpoint was saved with another capacity than the buffer it is loaded into."""


def _check_tensordict_meta(meta_file: Path, what: str) -> None:
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{what}: unreadable TensorDict metadata {meta_file} ({err})") from None
    if not isinstance(meta, dict) or meta.get("_type") != _TENSORDICT_TYPE:
        found = meta.get("_type") if isinstance(meta, dict) else type(meta).__name__
        raise UnsafeFileError(
            f"{what}: {meta_file.parent} holds a {found}, not a TensorDict of tensors; refusing to load it "
            "(non-tensor fields are unpickled, which can run code)"
        )
    for key, entry in meta.items():
        if not isinstance(entry, dict):
            continue
        if "type" in entry:
            if entry["type"] != "TensorDict":
                raise UnsafeFileError(
                    f"{what}: field {key!r} in {meta_file.parent} is a {entry['type']}, not a tensor; refusing to "
                    "load it (non-tensor fields are unpickled, which can run code)"
                )
        elif "dtype" not in entry or "shape" not in entry:
            raise UnsafeFileError(f"{what}: field {key!r} in {meta_file.parent} is not a tensor: {entry}")


def check_plain_pickle(path: str | Path, what: str) -> None:
    """Raise :class:`UnsafeFileError` unless the pickle at ``path`` only holds plain Python data.

    Reads the opcodes with :mod:`pickletools` (nothing is unpickled): any import or call is refused.
    """
    path = Path(path)
    try:
        ops = {op.name for op, _, _ in pickletools.genops(path.read_bytes())}
    except (OSError, ValueError) as err:
        raise UnsafeFileError(f"{what}: {path} is not a readable pickle ({err}); refusing to load it") from None
    code = sorted(ops & _CODE_OPCODES)
    if code:
        raise UnsafeFileError(
            f"{what}: {path} holds pickled objects (opcodes {code}); unpickling it could run code, refusing to load it"
        )


def check_safe_to_load(root: str | Path, what: str) -> None:
    """Raise :class:`UnsafeFileError` if loading the saved tree at ``root`` could run code.

    Every TensorDict ``meta.json`` must describe tensors only; ``*.pickle`` sidecars and opaque
    TensorDict archives are refused; ``*.pkl`` files (TorchRL's ``prefetch.pkl``) must hold plain
    data. ``*.pt`` files are left to ``torch.load(weights_only=True)``, which refuses code itself.
    """
    root = Path(root)
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        if path.name == "meta.json":
            try:
                is_tensordict = "_type" in json.loads(path.read_text())
            except (OSError, ValueError, TypeError):
                is_tensordict = True  # let the full check name the damage
            if is_tensordict:
                _check_tensordict_meta(path, what)
        elif path.suffix == ".pickle" or path.name.endswith(_OPAQUE_SUFFIXES):
            raise UnsafeFileError(f"{what}: {path} is a pickled or opaque payload; refusing to load it")
        elif path.suffix == ".pkl":
            check_plain_pickle(path, what)


def load_tensor_memmap(path: str | Path, what: str) -> TensorDict:
    """``TensorDict.load_memmap(path)`` for a directory that may be hostile: tensors only, no unpickling.

    Every ``meta.json`` under ``path`` is read first (JSON only); a non-tensor field or any file other
    than ``*.memmap``/``meta.json`` raises :class:`UnsafeFileError` naming it.
    """
    path = Path(path)
    if not (path / "meta.json").is_file():
        raise ValueError(f"{what}: no TensorDict at {path} (missing meta.json)")
    for file in sorted(path.rglob("*")):
        if file.is_dir():
            continue
        if file.name == "meta.json":
            _check_tensordict_meta(file, what)
        elif file.suffix != ".memmap":
            raise UnsafeFileError(f"{what}: {file} is not a tensor file (*.memmap); refusing to load {path}")
    return TensorDict.load_memmap(path, allow_pickle=False)


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
    sampled, so leaving them out loses nothing. Loading reads tensors only (:func:`load_tensor_memmap`)
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
