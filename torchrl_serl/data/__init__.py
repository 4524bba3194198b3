"""Replay buffers and demonstrations for SERL: online + demo buffer, frame-dedup pixel storage, TED demo files."""

from torchrl_serl.data.pixel_storage import FrameDedupReplayBuffer, FrameDedupStorage, NextFrameSampler, make_pixel_storage
from torchrl_serl.data.replay import OnlineDemoReplayBuffer

__all__ = ["FrameDedupReplayBuffer", "FrameDedupStorage", "NextFrameSampler", "OnlineDemoReplayBuffer", "make_pixel_storage"]
