"""Replay buffers and demonstrations for SERL: online + demo buffer, frame-dedup pixel storage, TED demo files."""

from torchrl_serl.data.storage_checkpointer import FilledRowsCheckpointer
from torchrl_serl.data.demos import check_same_keys, load_demos, record_demos, save_demos
from torchrl_serl.data.intervention_router import InterventionRouter
from torchrl_serl.data.pixel_storage import FrameDedupReplayBuffer, FrameDedupStorage, NextFrameSampler, make_pixel_storage
from torchrl_serl.data.replay import OnlineDemoReplayBuffer

__all__ = [
    "FilledRowsCheckpointer",
    "FrameDedupReplayBuffer",
    "FrameDedupStorage",
    "InterventionRouter",
    "NextFrameSampler",
    "OnlineDemoReplayBuffer",
    "check_same_keys",
    "load_demos",
    "make_pixel_storage",
    "record_demos",
    "save_demos",
]
