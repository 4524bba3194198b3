"""Demonstrations on disk: TorchRL TED transitions in a memory-mapped TensorDict directory plus metadata."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tensordict import TensorDict, TensorDictBase, is_non_tensor, is_tensor_collection
from tensordict.utils import NestedKey
from torchrl.envs import EnvBase

from torchrl_serl.data.safe_loading import UnsafeFileError, load_tensor_memmap

DEMO_FORMAT = "torchrl-serl-demos"
DEMO_FORMAT_VERSION = 1
_META = "metadata.json"
_DATA = "transitions"


def _key_names(data: TensorDictBase) -> list[str]:
    return sorted(".".join(k) if isinstance(k, tuple) else k for k in data.keys(True, True))


def _non_tensor_keys(data: TensorDictBase, prefix: tuple[str, ...] = ()) -> list[str]:
    """Names of the fields that are not tensors (``NonTensorData`` and the like), nested ones included."""
    found = []
    for key, value in data.items():
        if isinstance(value, torch.Tensor):
            continue
        if is_tensor_collection(value) and not is_non_tensor(value):
            found += _non_tensor_keys(value, (*prefix, key))
        else:
            found.append(".".join((*prefix, key)))
    return sorted(found)


def save_demos(
    path: str | Path,
    transitions: TensorDictBase,
    *,
    env_name: str,
    cameras: Sequence[str],
    action_scale_m: float,
    fps: float,
    overwrite: bool = False,
    **extra,
) -> Path:
    """Write TED ``transitions [N]`` to ``path`` (a directory) with their metadata.

    Layout: ``path/transitions/`` (``TensorDict.memmap``) and ``path/metadata.json`` (format, version,
    ``env_name``, ``cameras``, ``action_scale_m`` (m per action unit), ``fps`` (control rate, Hz),
    ``num_transitions``, ``num_episodes``, ``keys``, ``file_sizes`` (to detect truncation) and any
    ``extra`` JSON-able entries). Written to a
    sibling temporary directory and renamed into place, so a crash never leaves a half-written demo
    file under ``path``.
    """
    path = Path(path)
    if transitions.ndim != 1 or transitions.shape[0] == 0:
        raise ValueError(f"transitions must be a non-empty flat [N] TensorDict, got batch size {tuple(transitions.batch_size)}")
    non_tensor = _non_tensor_keys(transitions)
    if non_tensor:
        raise TypeError(f"demo fields must be tensors (loading anything else would unpickle it), got {non_tensor}")
    if ("next", "done") not in transitions.keys(True, True):
        raise KeyError("transitions must be TED (root obs/action, ('next', ...) entries incl. ('next', 'done'))")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if not (fps > 0 and action_scale_m > 0):
        raise ValueError(f"fps and action_scale_m must be > 0, got fps={fps}, action_scale_m={action_scale_m}")
    meta = {
        "format": DEMO_FORMAT,
        "version": DEMO_FORMAT_VERSION,
        "env_name": env_name,
        "cameras": list(cameras),
        "action_scale_m": float(action_scale_m),
        "fps": float(fps),
        "num_transitions": transitions.shape[0],
        "num_episodes": int(transitions.get(("next", "done")).sum()),
        "keys": _key_names(transitions),
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    transitions.memmap(tmp / _DATA)
    meta["file_sizes"] = {
        str(f.relative_to(tmp / _DATA)): f.stat().st_size for f in sorted((tmp / _DATA).rglob("*.memmap"))
    }
    with open(tmp / _META, "w") as f:
        json.dump(meta, f, indent=1)
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    if path.exists():  # overwrite: move the old file aside first, so a crash never loses both
        os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def load_demos(path: str | Path, expected_keys: Sequence[str] | TensorDictBase | None = None) -> tuple[TensorDict, dict]:
    """Load demos written by :func:`save_demos`: ``(transitions [N] (memory-mapped), metadata)``.

    Only tensor fields load: a folder whose memmap holds a pickled (non-tensor) field raises
    :class:`~torchrl_serl.data.safe_loading.UnsafeFileError` before anything is unpickled.

    Args:
        path: the demo directory.
        expected_keys: the online data's keys (a TensorDict such as ``env.fake_tensordict()`` or a
            list of ``"next.reward"``-style names); a mismatch raises ``ValueError`` naming the keys.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no demo directory at {path}")
    try:
        with open(path / _META) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"corrupt demo file {path}: missing {_META}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"corrupt demo file {path}: {_META} is not valid JSON ({err})") from None
    if meta.get("format") != DEMO_FORMAT or meta.get("version") != DEMO_FORMAT_VERSION:
        raise ValueError(f"{path} is not a {DEMO_FORMAT} v{DEMO_FORMAT_VERSION} file (metadata: {meta.get('format')!r} v{meta.get('version')!r})")
    if meta.get("num_transitions", 0) == 0:
        raise ValueError(f"empty demo file {path}: it holds 0 transitions")
    # Mapping silently zero-fills a truncated file, so sizes are checked against the saved manifest first.
    for name, size in meta.get("file_sizes", {}).items():
        file = path / _DATA / name
        if not file.is_file() or file.stat().st_size != size:
            found = file.stat().st_size if file.is_file() else "missing"
            raise ValueError(f"corrupt demo file {path}: {_DATA}/{name} has {found} bytes, expected {size}")
    try:
        data = load_tensor_memmap(path / _DATA, f"demo file {path}")  # tensors only: nothing is unpickled
    except UnsafeFileError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to map the files means the data is damaged
        raise ValueError(f"corrupt demo file {path}: cannot map {_DATA}/ ({type(err).__name__}: {err})") from None
    if data.shape[0] != meta["num_transitions"] or _key_names(data) != meta["keys"]:
        raise ValueError(
            f"corrupt demo file {path}: holds {data.shape[0]} transitions with keys {_key_names(data)}, "
            f"metadata says {meta['num_transitions']} with keys {meta['keys']}"
        )
    if expected_keys is not None:
        check_same_keys(data, expected_keys, what=f"demos at {path}")
    return data, meta


def check_same_keys(data: TensorDictBase, expected: Sequence[str] | TensorDictBase, what: str = "demos") -> None:
    """Raise ``ValueError`` naming the differing keys unless ``data`` has exactly the ``expected`` keys."""
    have = set(_key_names(data))
    want = set(_key_names(expected) if isinstance(expected, TensorDictBase) else expected)
    if have != want:
        raise ValueError(
            f"keys of the {what} do not match the online data: missing {sorted(want - have)}, "
            f"unexpected {sorted(have - want)}"
        )


def record_demos(
    env: EnvBase,
    policy: Callable[[TensorDictBase], TensorDictBase],
    num_episodes: int,
    *,
    max_steps: int = 1000,
    success_key: NestedKey | None = ("next", "success"),
    max_attempts: int | None = None,
) -> TensorDict:
    """Roll ``policy`` (scripted, or a teleoperated env's zero policy) and keep successful episodes.

    Returns the kept episodes as flat TED ``transitions [N]`` ready for :func:`save_demos`. An episode
    counts as successful when ``success_key`` is True at any step (``None`` keeps every episode).
    Gives up with ``RuntimeError`` after ``max_attempts`` episodes (default ``10 * num_episodes``).
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    max_attempts = max_attempts if max_attempts is not None else 10 * num_episodes
    kept, attempts = [], 0
    while len(kept) < num_episodes:
        if attempts >= max_attempts:
            raise RuntimeError(f"only {len(kept)} of {num_episodes} successful episodes in {attempts} attempts")
        attempts += 1
        episode = env.rollout(max_steps, policy, break_when_any_done=True)
        if success_key is None or bool(episode.get(success_key).any()):
            kept.append(episode)
    return torch.cat(kept, 0)
