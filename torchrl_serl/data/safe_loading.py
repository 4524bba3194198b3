"""Loading saved data without running code.

Files under a run directory, a demo folder or a checkpoint can be replaced by anyone who can write
there. Three loaders in the stack would then run code: tensordict unpickles non-tensor fields of a
memory-mapped TensorDict (``*.pickle`` sidecars), TorchRL's replay buffers ``pickle.load`` their
``prefetch.pkl``, and ``torch.load`` without ``weights_only=True`` unpickles. The checks here read
only JSON and pickle *opcodes* (never unpickle), so they are safe to run on a hostile file, and
refuse anything that would import or call code when loaded.
"""

from __future__ import annotations

import json
import pickletools
from pathlib import Path

from tensordict import TensorDict

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
