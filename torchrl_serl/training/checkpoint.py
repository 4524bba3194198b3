"""Save and resume everything a training run owns, crash-safely.

Built on TorchRL's :class:`~torchrl.checkpoint.Checkpoint` (each save is staged in a hidden
directory and published with one atomic rename) and :class:`~torchrl.checkpoint.CheckpointRotation`
(keep the newest ``k``). On top of that this module adds what a killed robot-learning run needs:

- process RNG state (python, numpy, torch) is always saved;
- step counters travel in the manifest metadata, so they are read back with the payload they
  describe (a buffer of ``n`` transitions is never paired with a counter from another save);
- :meth:`RunCheckpointer.resume` restores the newest checkpoint that *loads*, skipping (with a
  warning) ones whose payload is damaged, while :meth:`RunCheckpointer.load` of a named path
  raises :class:`CheckpointError` naming the path and the component;
- every payload file's size (and sha256 up to 64 MiB) is recorded in ``integrity.json`` and
  checked before loading: TorchRL/tensordict memmaps silently zero-fill a truncated tensor file,
  so without this a damaged checkpoint would load as zeros;
- loading never runs code from the checkpoint: every TensorDict ``meta.json`` is read first and
  non-tensor (pickled) fields are refused, ``prefetch.pkl`` must hold plain data (its opcodes are
  read, it is not unpickled first), and ``torch.load`` runs with ``weights_only=True``;
- TorchRL buffers on a TensorDict storage are given the
  :class:`~torchrl_serl.data.storage_checkpointer.FilledRowsCheckpointer`: a save writes the rows in use, not
  the preallocated capacity, and resuming into a buffer of another capacity raises
  :class:`~torchrl_serl.data.storage_checkpointer.BufferCapacityError` naming the option;
- stale staging directories left by a save that was killed are removed;
- :class:`GracefulStop` turns Ctrl-C and SIGTERM into a stop at the next step boundary, so a
  recipe's ``try/finally`` saves a consistent state on Ctrl-C and on ``kill``.

Components are anything with ``state_dict``/``load_state_dict`` (modules, optimizers, loss
modules with their target networks and temperature, collectors, loggers), ``dump``/``load``
(TorchRL replay buffers) or ``save``/``load`` (the data package's online + demo buffer, which
writes its own crash-safe versioned directory inside the checkpoint).

What is not restored: the MuJoCo state of an episode in flight. A resumed run starts a fresh
episode; the transitions of the interrupted episode that were collected before the save are in
the buffer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch

from torchrl.checkpoint import (
    Checkpoint,
    CheckpointAdapter,
    CheckpointError,
    CheckpointRotation,
    GlobalRNGState,
)
from torchrl.data.replay_buffers.checkpointers import TensorStorageCheckpointer
from torchrl.data.replay_buffers.storages import TensorStorage

from torchrl_serl.data.safe_loading import UnsafeFileError, check_safe_to_load
from torchrl_serl.data.storage_checkpointer import BufferCapacityError, FilledRowsCheckpointer, fsync_dir, fsync_tree

_PREFIX = "checkpoint"
_INTEGRITY = "integrity.json"
# Files up to this size are hashed; larger ones (pixel replay buffers of many GB) are checked by
# size only, so a save does not spend minutes hashing.
_HASH_LIMIT_BYTES = 64 * 2**20


class _SaveLoadAdapter(CheckpointAdapter):
    """For objects that checkpoint themselves with ``save(path)``/``load(path)`` and have no
    ``dump`` (the data package's :class:`~torchrl_serl.data.OnlineDemoReplayBuffer`)."""

    adapter_id = "torchrl_serl.save_load"

    def save(self, component, path, *, args, kwargs):
        path.mkdir(parents=True, exist_ok=True)
        component.save(path, *args, **kwargs)

    def load(self, component, path, *, map_location, tensor_load_kwargs, args, kwargs):
        component.load(path, *args, **kwargs)


def _adapter_for(value: Any) -> CheckpointAdapter | None:
    has = lambda name: callable(getattr(value, name, None))  # noqa: E731
    if has("save") and has("load") and not has("dump") and not has("state_dict"):
        return _SaveLoadAdapter()
    return None


def _write_filled_rows_only(value: Any) -> None:
    """Give a TorchRL buffer on a TensorDict storage the :class:`FilledRowsCheckpointer`.

    TorchRL's default checkpointer writes the whole preallocated storage (124 MB for 600 state
    transitions in a 1M buffer) and, loaded into a buffer of another capacity, fails with a tensor
    size mismatch; the filled-rows one writes ``len`` rows and names the capacity option. A storage
    with its own checkpointer or hooks is left alone.
    """
    storage = getattr(value, "_storage", None)
    checkpointer = getattr(storage, "checkpointer", None)
    if (isinstance(storage, TensorStorage) and type(checkpointer) is TensorStorageCheckpointer
            and not checkpointer._save_hooks and not checkpointer._load_hooks):
        storage.checkpointer = FilledRowsCheckpointer()


def _find_in_causes(err: BaseException | None, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    while err is not None:
        if isinstance(err, kinds):
            return err
        err = err.__cause__ or err.__context__
    return None


def _is_empty_buffer(value: Any) -> bool:
    return callable(getattr(value, "dumps", None)) and len(value) == 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _inventory(root: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != _INTEGRITY:
            size = path.stat().st_size
            entry: dict[str, Any] = {"size": size}
            if size <= _HASH_LIMIT_BYTES:
                entry["sha256"] = _sha256(path)
            files[path.relative_to(root).as_posix()] = entry
    return files


@dataclass
class ResumeInfo:
    """What :meth:`RunCheckpointer.resume` found: the checkpoint path, its step and counters."""

    path: Path
    step: int
    counters: dict[str, Any] = field(default_factory=dict)


def checkpoint_directories(directory: str | os.PathLike) -> list[Path]:
    """The checkpoints under ``directory`` (a :class:`RunCheckpointer`'s), oldest first, damaged ones
    included (:meth:`RunCheckpointer.resume` reports those): whether a run resumes, known before its
    components exist."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        step = path.name[len(_PREFIX) + 1 :]
        if path.name.startswith(f"{_PREFIX}-") and step.isdigit() and path.is_dir():
            found.append((int(step), path))
    return [path for _, path in sorted(found)]


class RunCheckpointer:
    """Rotating, atomic checkpoints of a run's components under ``directory``.

    Args:
        directory: where checkpoints live (``<run_dir>/checkpoints``), one subdirectory
            ``checkpoint-<step:012d>`` per save.
        keep_last: how many of the newest checkpoints to keep (>= 1).
        **components: named objects to save and restore (see module docstring). The name
            ``rng`` is reserved for the process RNG state.

    Examples:
        >>> ckpt = RunCheckpointer(run_dir / "checkpoints", keep_last=2,
        ...                        actor=actor, loss=loss, optim=optim, buffer=rb)
        >>> info = ckpt.resume()          # None on a fresh run
        >>> step = info.step if info else 0
        >>> ckpt.save(step, updates=n_updates)
    """

    def __init__(self, directory: str | os.PathLike, keep_last: int = 2, **components: Any) -> None:
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"keep_last must be an integer >= 1, got {keep_last!r}")
        if "rng" in components:
            raise ValueError("component name 'rng' is reserved for the process RNG state")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.checkpoint = Checkpoint(rng=GlobalRNGState())
        for name, value in components.items():
            _write_filled_rows_only(value)
            self.checkpoint.register(name, value, adapter=_adapter_for(value))
        self.rotation = CheckpointRotation(self.directory, keep_last=keep_last, prefix=_PREFIX)
        self._remove_stale_stages()

    def _remove_stale_stages(self) -> None:
        # A save killed before its rename leaves ".checkpoint-<step>.stage-<uuid>"; the published
        # checkpoints are untouched by it, so it is only disk to reclaim.
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            name = path.name
            if name.startswith(".") and f"{_PREFIX}-" in name and (".stage-" in name or ".delete-" in name):
                shutil.rmtree(path, ignore_errors=True)

    def save(self, step: int, **counters: Any) -> Path:
        """Atomically save all components at env step ``step`` with JSON ``counters``."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        metadata = {"step": step, "counters": counters}
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"{_PREFIX}-{step:012d}"
        stage = self.directory / f".{final.name}.stage-{uuid.uuid4().hex}"
        try:
            self.checkpoint.save(stage, components=self._non_empty(), metadata=metadata)
            (stage / _INTEGRITY).write_text(json.dumps(_inventory(stage)))
            fsync_tree(stage)
            if final.exists():
                old = self.directory / f".{final.name}.delete-{uuid.uuid4().hex}"
                os.replace(final, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(stage, final)
            fsync_dir(self.directory)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
        self.rotation.prune()
        return final

    def _non_empty(self) -> list[str]:
        # TorchRL cannot dump a buffer that never received data; an empty buffer is saved as
        # "absent" and stays empty on load.
        return [name for name, value in self.checkpoint.components.items() if not _is_empty_buffer(value)]

    def checkpoints(self) -> tuple[Path, ...]:
        """Published checkpoints with a readable manifest, oldest first."""
        return self.rotation.checkpoints()

    def load(self, path: str | os.PathLike) -> ResumeInfo:
        """Restore every component from ``path``; :class:`CheckpointError` if it is damaged.

        Raises :class:`~torchrl_serl.data.safe_loading.UnsafeFileError` (before loading anything) when a
        file in it would run code when loaded (pickled objects in ``prefetch.pkl``, non-tensor fields),
        and :class:`~torchrl_serl.data.storage_checkpointer.BufferCapacityError` when a replay buffer was saved
        with another capacity. :meth:`resume` does not skip past either: both need the user.
        """
        path = Path(path)
        try:
            manifest = Checkpoint.manifest(path)
        except FileNotFoundError:
            raise
        except (CheckpointError, OSError, ValueError, TypeError) as err:
            raise CheckpointError(f"corrupt checkpoint {path}: unreadable manifest ({err})") from err
        self._verify(path)
        check_safe_to_load(path, f"checkpoint {path}")
        saved = set(manifest["components"])
        absent = [n for n, v in self.checkpoint.components.items() if n not in saved and not _is_empty_buffer(v)]
        if absent:
            raise CheckpointError(f"checkpoint {path} has no component(s) {absent}; it holds {sorted(saved)}")
        try:
            self.checkpoint.load(path, components=saved & set(self.checkpoint.components))
        except Exception as err:
            mismatch = _find_in_causes(err, (BufferCapacityError, UnsafeFileError))
            if mismatch is not None:
                raise type(mismatch)(str(mismatch)) from err
            raise CheckpointError(f"cannot restore checkpoint {path}: {err}") from err
        metadata = manifest.get("metadata", {})
        return ResumeInfo(path=path, step=int(metadata["step"]), counters=dict(metadata.get("counters", {})))

    @staticmethod
    def _verify(path: Path) -> None:
        try:
            expected = json.loads((path / _INTEGRITY).read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"corrupt checkpoint {path}: no readable {_INTEGRITY} ({err})") from err
        actual = _inventory(path)
        for name, entry in expected.items():
            found = actual.get(name)
            if found is None:
                raise CheckpointError(f"corrupt checkpoint {path}: file {name} is missing")
            if found != entry:
                raise CheckpointError(
                    f"corrupt checkpoint {path}: file {name} is damaged (expected {entry}, found {found})"
                )

    def resume(self) -> ResumeInfo | None:
        """Restore the newest checkpoint that loads; ``None`` if the directory has none.

        Damaged checkpoints are skipped with a warning; if every checkpoint is damaged this
        raises :class:`CheckpointError` listing them (starting over silently would overwrite
        a run the user meant to continue).
        """
        candidates = checkpoint_directories(self.directory)
        errors = []
        for path in reversed(candidates):
            try:
                return self.load(path)
            except CheckpointError as err:
                warnings.warn(f"skipping checkpoint that does not load: {err}", stacklevel=2)
                errors.append(str(err))
        if errors:
            raise CheckpointError("no loadable checkpoint in " f"{self.directory}:\n" + "\n".join(errors))
        return None


class GracefulStop:
    """Stop a training loop at a step boundary on Ctrl-C (SIGINT) or ``kill`` (SIGTERM).

    Within the ``with`` block the first signal only sets :attr:`requested`; the loop checks it
    after each step, breaks, and its ``finally`` saves a consistent checkpoint (a signal that
    raised in the middle of an optimizer step could leave critic and targets out of step). A second
    signal raises ``KeyboardInterrupt`` at once. After the block, a stopped run exits with status
    ``128 + signal`` as a shell expects of a killed program. Signals are only catchable in the main
    thread; elsewhere the block does nothing special.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt(f"signal {signum} (second)")
        self.requested, self.signum = True, signum

    def __enter__(self) -> "GracefulStop":
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread
            self._previous.clear()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if exc_type is None and self.requested:
            raise SystemExit(128 + int(self.signum))


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` (like Ctrl-C) so ``finally`` runs.

    The exception can land in the middle of an update; prefer :class:`GracefulStop`, which stops
    at a step boundary. Only usable from the main thread; elsewhere it is a no-op.
    """
    try:
        previous = signal.getsignal(signal.SIGTERM)

        def _raise(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, _raise)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def checkpoint_summary(path: str | os.PathLike) -> Mapping[str, Any]:
    """The manifest metadata (step, counters) of a checkpoint, without loading payloads."""
    return Checkpoint.manifest(path).get("metadata", {})


def parameters_checksum(params: Iterable[torch.Tensor]) -> float:
    """Sum of all parameter values: a cheap fingerprint to check that weights carried over."""
    return float(sum(p.detach().double().sum() for p in params))


__all__ = [
    "CheckpointError",
    "ResumeInfo",
    "RunCheckpointer",
    "GracefulStop",
    "checkpoint_directories",
    "checkpoint_summary",
    "parameters_checksum",
    "terminate_as_interrupt",
]
