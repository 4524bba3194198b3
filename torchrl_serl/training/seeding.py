"""Seeding a run's process."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (the env is seeded by its builder)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
