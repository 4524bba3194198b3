"""The replay buffers the recipes build (uniform, online + demos, pixel), and what of a collector
batch they store."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Iterable

import torch
from tensordict import TensorDictBase
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, TensorDictReplayBuffer

from torchrl_serl.data.demos import load_demos
from torchrl_serl.data.pixel_storage import FrameDedupReplayBuffer
from torchrl_serl.data.replay import OnlineDemoReplayBuffer

# Keys the policy and collector write that the learner never reads (the DrQ loss re-encodes
# the images): not worth buffer memory.
_NOT_STORED = ("loc", "scale", "embedding", "embedding_sg", "grasp_q_values", "collector")


def _clear_scratch_dir(scratch_dir: str | Path) -> None:
    """Empty a replay buffer's memory-map folder (working memory: a resumed run refills the buffer
    from its checkpoint, and stale ``*.memmap`` files would make the storage refuse to start).
    Refuses a folder holding anything else, so a run or data folder is never deleted by mistake."""
    scratch_dir = Path(scratch_dir)
    if not scratch_dir.exists():
        return
    for path in scratch_dir.rglob("*"):
        if path.is_file() and path.suffix != ".memmap" and path.name != "meta.json":
            raise ValueError(
                f"scratch_dir {str(scratch_dir)!r} holds {str(path)!r}, which is not replay working memory "
                "(*.memmap, meta.json); give the buffer a folder of its own, e.g. <run dir>/replay"
            )
    shutil.rmtree(scratch_dir)


def make_replay_buffer(
    capacity: int,
    batch_size: int,
    device: str | torch.device = "cpu",
    scratch_dir: str | Path | None = None,
) -> TensorDictReplayBuffer:
    """Uniform replay: in RAM (``LazyTensorStorage``), or memory-mapped under ``scratch_dir``
    (emptied first: working memory that a resumed run refills from its checkpoint)."""
    if capacity < 1 or batch_size < 1:
        raise ValueError(f"capacity and batch_size must be >= 1, got {capacity}, {batch_size}")
    if scratch_dir is None:
        storage = LazyTensorStorage(capacity, device=device)
    else:
        _clear_scratch_dir(scratch_dir)
        storage = LazyMemmapStorage(capacity, scratch_dir=str(scratch_dir), device=device)
    return TensorDictReplayBuffer(storage=storage, batch_size=batch_size)


def make_demo_replay_buffer(
    capacity: int,
    batch_size: int,
    demos_path: str | Path,
    scratch_dir: str | Path,
    demo_fraction: float = 0.5,
    pixel_keys: tuple[str, ...] = (),
    seed: int = 0,
    transform=None,
    encode: Callable[[TensorDictBase], TensorDictBase] | None = None,
    prefetch: bool = False,
):
    """RLPD buffer: online transitions + the demos at ``demos_path``, each batch exactly
    ``demo_fraction`` demos (:class:`~torchrl_serl.data.OnlineDemoReplayBuffer`, memory-mapped under
    ``scratch_dir``). Interventions can be appended later with ``extend_demos``. ``encode`` maps the
    demo transitions before they are stored (e.g. :meth:`TrunkFeatures.encode_transitions` then
    dropping the images). ``prefetch``: draw each next batch in a background thread.

    ``scratch_dir`` is working memory, emptied here: a resumed run refills it from its checkpoint.
    """
    demos, _ = load_demos(demos_path)
    demos = transitions(demos)
    if encode is not None:
        demos = encode(demos)
    _clear_scratch_dir(scratch_dir)
    buffer = OnlineDemoReplayBuffer(
        capacity,
        # room for the interventions extend_demos adds during training
        max(2, 2 * demos.shape[0]),
        demo_fraction=demo_fraction,
        batch_size=batch_size,
        pixel_keys=pixel_keys,
        scratch_dir=scratch_dir,
        seed=seed,
        transform=transform,
        prefetch=prefetch,
    )
    buffer.extend_demos(demos)
    return buffer


def make_pixel_replay_buffer(
    capacity: int,
    batch_size: int,
    scratch_dir: str | Path,
    pixel_keys: tuple[str, ...] = ("front", "wrist"),
    seed: int = 0,
    transform=None,
):
    """Uniform pixel replay storing each uint8 frame once, memory-mapped under ``scratch_dir``
    (:class:`~torchrl_serl.data.FrameDedupReplayBuffer`), with an optional sample ``transform``
    (e.g. :class:`~torchrl_serl.envs.transforms.LearnedReward`). ``scratch_dir`` is emptied: it
    is working memory, a resumed run refills it from its checkpoint."""
    _clear_scratch_dir(scratch_dir)
    return FrameDedupReplayBuffer(
        capacity, pixel_keys, scratch_dir, generator=torch.Generator().manual_seed(seed), batch_size=batch_size,
        transform=transform,
    )


def online_size(buffer) -> int:
    """Transitions collected online (a demo buffer's demos not counted)."""
    online = getattr(buffer, "online_buffer", None)
    return len(online if online is not None else buffer)


def transitions(batch: TensorDictBase, drop_images: Iterable[str] = ()) -> TensorDictBase:
    """A collector batch without the keys the learner never reads, flattened to ``[N]``.
    ``drop_images``: camera keys not stored either (a cached-feature learner reads only features)."""
    drop_images = list(drop_images)
    return batch.exclude(*_NOT_STORED, *drop_images, *[("next", k) for k in drop_images]).reshape(-1)
