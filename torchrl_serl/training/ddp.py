"""Data-parallel SERL learner: :class:`~torch.nn.parallel.DistributedDataParallel` over the loss.

Each rank samples its own ``[utd_ratio * B]`` batch, runs the same SERL update (critic-only updates on
``utd_ratio - 1`` minibatches, then one full update on the last) and DDP averages the gradients of the critic ensemble, the actor and
``log_alpha`` across ranks before every optimizer step. Ranks start from rank 0's parameters
(DDP broadcasts them), and identical averaged gradients keep parameters, optimizer moments and
target networks identical on every rank. With per-rank batches of ``utd_ratio * B`` the update equals a
single-process update on the ``world_size * utd_ratio * B`` concatenated batch (its minibatch ``i``
is the ranks' minibatches ``i`` together), because every SERL loss is a batch mean.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist
from tensordict import TensorDictBase
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from torchrl_serl.training.updater import SACUpdater


def init_ddp(
    rank: int,
    world_size: int,
    *,
    master_addr: str = "127.0.0.1",
    master_port: int = 29560,
    backend: str = "gloo",
    timeout_s: float = 60.0,
) -> None:
    """Joins the learner's process group (``gloo`` on CPU, ``nccl`` on GPUs)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}.")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}.")
    os.environ["MASTER_ADDR"] = master_addr
    os.environ["MASTER_PORT"] = str(master_port)
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s))


class _LossCall(nn.Module):
    """Exposes one method of the loss as ``forward`` returning a dict of tensors.

    DDP finds the tensors of a ``dict`` output (not of a ``TensorDict``) to tell which parameters
    a critic-only update leaves unused.
    """

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, tensordict: TensorDictBase, method: str) -> dict[str, torch.Tensor]:
        out = self.loss(tensordict) if method == "forward" else getattr(self.loss, method)(tensordict)
        return dict(out.items())


class DDPSACUpdater(SACUpdater):
    """:class:`~torchrl_serl.training.updater.SACUpdater` whose gradients are averaged over ranks.

    Call after :func:`init_ddp` (or any ``torch.distributed.init_process_group``). Arguments are
    those of ``SACUpdater``; ``device_ids`` is passed to DDP (``None`` on CPU, ``[local_rank]``
    on GPUs). ``update(batch)`` takes this rank's ``[utd_ratio * B]`` batch.
    """

    def __init__(self, loss, optimizers, target_updater, utd_ratio: int, device_ids: list[int] | None = None):
        super().__init__(loss, optimizers, target_updater, utd_ratio)
        if not dist.is_initialized():
            raise RuntimeError("DDPSACUpdater needs an initialised process group: call init_ddp() first.")
        # targets are updated from identical parameters on every rank: no need to broadcast them
        self.ddp = DistributedDataParallel(
            _LossCall(loss), device_ids=device_ids, find_unused_parameters=True, broadcast_buffers=False
        )
        self._critic_loss: Callable = lambda td: self.ddp(td, "loss_critic")
        self._full_loss: Callable = lambda td: self.ddp(td, "forward")
