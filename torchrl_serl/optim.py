"""Optimizer helpers SERL users expect (``serl_launcher/common/optimizers.py``), in PyTorch."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_decay(
    step: int, warmup_steps: int, decay_steps: int, init_value: float = 0.0, end_value: float = 0.0
) -> float:
    """LR multiplier of optax's ``warmup_cosine_decay_schedule`` (peak = 1).

    Linear from ``init_value`` to 1 over ``warmup_steps``, then cosine from 1 to ``end_value``
    until ``decay_steps`` (counted from step 0, warm-up included, as optax), then constant.
    """
    if step < warmup_steps:
        return init_value + (1.0 - init_value) * step / warmup_steps
    progress = min(step - warmup_steps, decay_steps - warmup_steps) / max(decay_steps - warmup_steps, 1)
    return end_value + (1.0 - end_value) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_lr_schedule(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int = 0,
    decay_steps: int | None = None,
    init_value: float = 0.0,
    end_value: float = 0.0,
) -> LambdaLR:
    """Warm-up (linear) then optional cosine decay, as SERL's ``make_optimizer``.

    Without ``decay_steps`` the LR ramps over ``warmup_steps`` then stays at the peak (SERL's
    ``warmup_steps`` only case). Call ``scheduler.step()`` after every ``optimizer.step()``.
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if decay_steps is not None and decay_steps <= warmup_steps:
        raise ValueError(f"decay_steps must be > warmup_steps={warmup_steps}, got {decay_steps}")
    if decay_steps is None:
        def factor(step: int) -> float:
            return min(1.0, init_value + (1.0 - init_value) * step / warmup_steps) if warmup_steps else 1.0
    else:
        def factor(step: int) -> float:
            return warmup_cosine_decay(step, warmup_steps, decay_steps, init_value, end_value)
    return LambdaLR(optimizer, factor)


def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float | None) -> torch.Tensor | None:
    """``optax.clip_by_global_norm``: rescale grads so their global L2 norm is <= ``max_norm``.

    Returns the norm before clipping (a tensor, no host sync), or ``None`` when ``max_norm`` is
    ``None``.
    """
    if max_norm is None:
        return None
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0 or None, got {max_norm}")
    params = [p for p in parameters if p.grad is not None]
    return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)


def make_optimizer(
    params: Iterable[torch.Tensor],
    lr: float = 3e-4,
    weight_decay: float = 0.0,
    fused: bool | None = None,
    capturable: bool = False,
) -> torch.optim.Optimizer:
    """Adam (AdamW with ``weight_decay``), SERL's default learning rate 3e-4.

    ``fused=None`` picks the fused kernel (one kernel for all parameters, CPU and CUDA);
    ``False`` falls back to the ``foreach`` implementation. ``capturable=True`` keeps the step
    counts on the parameters' device, so a CUDA graph can record the step.
    """
    params = list(params)
    if not params:
        raise ValueError("make_optimizer got no parameters")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    fused = True if fused is None else fused
    cls = torch.optim.AdamW if weight_decay else torch.optim.Adam
    kwargs = {"lr": lr, "weight_decay": weight_decay, "capturable": capturable}
    if fused:
        kwargs["fused"] = True
    else:
        kwargs["foreach"] = True
    return cls(params, **kwargs)
