"""Pixel replay storage that keeps each camera frame once: ``("next", cam)`` is read back from row ``i + 1``.

Layout. Rows hold TED transitions without their ``("next", cam)`` frames. A write of a trajectory
segment ``t_a .. t_b`` fills consecutive rows and ends with one *tail* row whose frames are
``t_b``'s next frames; tail rows are never sampled (``HAS_NEXT`` is False). When the next write
continues the same trajectory, its first frames equal the tail's frames byte for byte, so it
overwrites the tail in place and the frame is still stored once. A finished episode or a switch to
another env's trajectory costs one extra row. Everything (frames, flags, cursor) lives in the
storage and the writer, so TorchRL's ``dumps``/``loads`` checkpoint it exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import LazyMemmapStorage, RoundRobinWriter, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import RandomSampler

from torchrl_serl.data.storage_checkpointer import FilledRowsCheckpointer

# Frames (uint8) or cached trunk features (half precision): what a pixel key may hold.
_COMPACT_DTYPES = (torch.uint8, torch.float16, torch.bfloat16)
# Storage flag: True where row i is a transition whose next frames are in row i + 1.
HAS_NEXT = "_has_next_frame"


def _next(key: NestedKey) -> tuple:
    return ("next", *((key,) if isinstance(key, str) else key))


def next_is_following_frame(frames: torch.Tensor, next_frames: torch.Tensor) -> torch.Tensor:
    """bool ``[T]``: where step ``t``'s next frame is step ``t + 1``'s frame (consecutive steps of
    one trajectory, so the frame needs storing or sending once); False at the last step.

    Args:
        frames, next_frames: ``[T, ...]`` one camera's frames (or features) and next frames.
    """
    follows = torch.zeros(frames.shape[0], dtype=torch.bool)
    follows[:-1] = (frames[1:] == next_frames[:-1]).flatten(1).all(1)
    return follows


class FrameDedupStorage(LazyMemmapStorage):
    """``LazyMemmapStorage`` whose ``get`` rebuilds ``("next", cam)`` from row ``i + 1`` (mod capacity).

    Args:
        capacity: number of rows (transitions plus one tail row per written segment).
        pixel_keys: camera keys stored once, uint8 ``[C, H, W]`` per row.
        scratch_dir: directory of the memory-mapped files (default: a temporary directory).
    """

    def __init__(self, capacity: int, pixel_keys: Sequence[NestedKey], scratch_dir: str | Path | None = None):
        super().__init__(capacity, scratch_dir=scratch_dir)
        self.pixel_keys = list(pixel_keys)

    def get(self, index):
        if isinstance(index, slice):
            index = torch.arange(len(self))[index]
        elif not isinstance(index, torch.Tensor):
            index = torch.as_tensor(index)
        data = super().get(index)
        if not self.pixel_keys:
            return data
        next_rows = (index + 1) % self.max_size
        frames = self._storage.select(*self.pixel_keys)[next_rows]
        for key in self.pixel_keys:
            data.set(_next(key), frames.get(key))
        return data.exclude(HAS_NEXT)


class NextFrameSampler(RandomSampler):
    """Uniform sampler over the rows of a :class:`FrameDedupStorage` that have their next frames stored.

    The sampleable rows are cached between writes (the owner calls :meth:`invalidate`), so a
    sample costs ``O(batch)`` rather than a scan of the memory-mapped flags.
    """

    _valid: torch.Tensor | None = None

    def invalidate(self) -> None:
        self._valid = None

    def sample(self, storage: FrameDedupStorage, batch_size: int) -> tuple[torch.Tensor, dict]:
        if len(storage) == 0:
            raise RuntimeError("cannot sample from an empty replay buffer: extend it first")
        if self._valid is None:
            self._valid = storage._storage.get(HAS_NEXT)[: len(storage)].nonzero().squeeze(-1)
        valid = self._valid
        if valid.numel() == 0:
            raise RuntimeError("the replay buffer holds no complete transition yet")
        pick = torch.randint(0, valid.numel(), (batch_size,), generator=self._rng)
        return valid[pick], {}


def make_pixel_storage(
    capacity: int, scratch_dir: str | Path | None = None, pixel_keys: Sequence[NestedKey] = ("front", "wrist")
) -> FrameDedupStorage:
    """Memory-mapped uint8 pixel storage of ``capacity`` rows that stores each frame once (see module doc)."""
    if capacity < 2:
        raise ValueError(f"capacity must be >= 2 rows, got {capacity}")
    return FrameDedupStorage(capacity, pixel_keys, scratch_dir)


class FrameDedupReplayBuffer(TensorDictReplayBuffer):
    """Replay buffer of TED transitions whose camera frames are stored once (memmapped, uint8).

    ``extend`` takes transitions ``[T]`` or ``[N_envs, T]`` (a collector batch). Consecutive rows are
    stored as one segment only where the next row's frames equal this row's next frames, so any
    selection of transitions (e.g. intervention steps only) is stored exactly. Samples are ordinary TED batches
    with ``("next", cam)`` filled in. Memory per transition: one copy of each frame plus the
    low-dimensional keys, plus one row per segment (see :meth:`bytes_per_transition`).

    Args:
        capacity: storage rows.
        pixel_keys: camera keys (uint8 ``[*B, C, H, W]``) or cached trunk features (float16/bfloat16
            ``[*B, K, C, h, w]``, see :class:`~torchrl_serl.envs.transforms.TrunkFeatures`) stored once.
        scratch_dir: where the memory-mapped files live.
        generator: ``torch.Generator`` driving sampling (checkpointed with the buffer).
        batch_size: default ``sample`` size.
        transform: read-side transform (e.g. :class:`~torchrl_serl.envs.transforms.RandomShift`).
    """

    def __init__(
        self,
        capacity: int,
        pixel_keys: Sequence[NestedKey] = ("front", "wrist"),
        scratch_dir: str | Path | None = None,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        transform=None,
    ):
        super().__init__(
            storage=make_pixel_storage(capacity, scratch_dir, pixel_keys),
            sampler=NextFrameSampler(),
            writer=RoundRobinWriter(),
            checkpointer=FilledRowsCheckpointer(),
            generator=generator,
            batch_size=batch_size,
            transform=transform,
        )
        self.pixel_keys = list(pixel_keys)

    def extend(self, data: TensorDictBase, *, update_priority: bool | None = None) -> torch.Tensor:
        """Write transitions ``[T]`` or ``[N_envs, T]``; returns their row indices (same shape)."""
        if not isinstance(data, TensorDictBase):
            raise TypeError(f"{type(self).__name__}.extend takes a TensorDict, got {type(data).__name__}")
        if self._transform is not None and len(self._transform):
            data = self._transform.inv(data)
        if data.ndim not in (1, 2):
            raise ValueError(f"expected transitions [T] or [N_envs, T], got batch size {tuple(data.batch_size)}")
        with self._replay_lock, self._write_lock:
            self._sampler.invalidate()
            if data.ndim == 2:
                return torch.stack([self._write_trajectory(d) for d in data.unbind(0)])
            return self._write_trajectory(data)

    def loads(self, path) -> None:
        super().loads(path)
        self._sampler.invalidate()

    def empty(self, empty_write_count: bool = True) -> None:
        super().empty(empty_write_count)
        self._sampler.invalidate()

    def _check(self, data: TensorDictBase) -> None:
        keys = data.keys(True, True)
        for key in self.pixel_keys:
            for k in (key, _next(key)):
                if k not in keys:
                    raise KeyError(f"pixel key {k!r} missing from the transitions (keys: {sorted(map(str, keys))})")
                if data.get(k).dtype not in _COMPACT_DTYPES:
                    raise TypeError(
                        f"pixel key {k!r} must be uint8 frames or float16/bfloat16 cached features "
                        f"(compact storage), got {data.get(k).dtype}"
                    )
        if ("next", "done") not in keys:
            raise KeyError("transitions need ('next', 'done') to know where trajectories end")

    def _write_trajectory(self, data: TensorDictBase) -> torch.Tensor:
        self._check(data)
        # A segment ends where the episode ends or where the next step's frames are not this step's
        # next frames (another trajectory, or a filtered subset such as intervention steps only).
        breaks = data.get(("next", "done")).reshape(data.shape[0], -1).any(-1)
        for key in self.pixel_keys:
            frames, next_frames = data.get(key), data.get(_next(key))
            breaks[:-1] |= ~next_is_following_frame(frames, next_frames)[:-1]
        ends = breaks.nonzero().squeeze(-1).tolist()
        if not ends or ends[-1] != data.shape[0] - 1:
            ends.append(data.shape[0] - 1)
        index, start = [], 0
        for end in ends:
            index.append(self._write_segment(data[start : end + 1]))
            start = end + 1
        return torch.cat(index)

    def _write_segment(self, seg: TensorDictBase) -> torch.Tensor:
        storage, writer, cap = self._storage, self._writer, self._storage.max_size
        n = seg.shape[0]
        if n + 1 > cap:
            raise ValueError(f"a segment of {n} transitions needs {n + 1} rows but capacity is {cap}")
        rows = seg.exclude(*[_next(k) for k in self.pixel_keys])
        tail = rows[-1:].clone()
        for key in self.pixel_keys:
            tail.set(key, seg.get(_next(key))[-1:])
        rows.set(HAS_NEXT, torch.ones(n, dtype=torch.bool))
        tail.set(HAS_NEXT, torch.zeros(1, dtype=torch.bool))
        start = writer._cursor
        if len(storage) and self._continues(seg[0], (start - 1) % cap):
            start = (start - 1) % cap
        index = (start + torch.arange(n + 1)) % cap
        previous_len = len(storage)
        storage.set(index, torch.cat([rows, tail]))
        # TensorStorage adds every written row to its length; rows rewritten in place must not count twice.
        wrapped = bool((index < start).any()) or previous_len == cap
        storage._len = cap if wrapped else max(previous_len, start + n + 1)
        writer._cursor = (start + n + 1) % cap
        writer._write_count += n
        return index[:-1]

    def _continues(self, first: TensorDictBase, tail_row: int) -> bool:
        """True when ``first``'s frames are exactly the tail row's, so the tail can be overwritten."""
        stored = self._storage._storage[tail_row]
        if bool(stored.get(HAS_NEXT)):
            return False
        return all(torch.equal(stored.get(k), first.get(k)) for k in self.pixel_keys)

    @property
    def num_transitions(self) -> int:
        """Sampleable transitions held (``len`` counts storage rows, tail rows included)."""
        return int(self._storage._storage.get(HAS_NEXT)[: len(self._storage)].sum()) if len(self._storage) else 0

    def bytes_per_transition(self) -> float:
        """Bytes of the rows in use divided by the number of sampleable transitions they hold."""
        storage = self._storage
        return storage._storage.bytes() / storage.max_size * len(storage) / max(self.num_transitions, 1)
