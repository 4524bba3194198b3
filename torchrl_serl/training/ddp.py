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


def init_ddp_from_env(backend: str = "gloo", timeout_s: float = 60.0) -> tuple[int, int, int]:
    """Joins the process group that ``torchrun`` describes (``$RANK``, ``$WORLD_SIZE``,
    ``$LOCAL_RANK``, ``$MASTER_ADDR``, ``$MASTER_PORT``); returns ``(rank, world_size, local_rank)``.

    Started without ``torchrun`` (no ``$RANK``), the process is a group of one, rank 0, with an
    in-process store (no port opened). With ``nccl`` the process takes GPU ``local_rank``.
    """
    if "RANK" not in os.environ:
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}.")
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                                timeout=timedelta(seconds=timeout_s))
        rank, world_size, local_rank = 0, 1, 0
    else:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        init_ddp(rank, world_size, master_addr=os.environ.get("MASTER_ADDR", "127.0.0.1"),
                 master_port=int(os.environ.get("MASTER_PORT", 29560)), backend=backend, timeout_s=timeout_s)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    return rank, world_size, local_rank


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
    on GPUs). ``update(batch)`` takes this rank's ``[utd_ratio * B]`` batch. Every parameter and
    buffer of the loss, target networks and temperature included, starts as rank 0's. The loss
    runs eagerly through DDP: ``compile`` and ``cudagraphs`` are refused.
    """

    def __init__(self, loss, optimizers, target_updater, utd_ratio: int, device_ids: list[int] | None = None,
                 **updater_kwargs):
        if updater_kwargs.get("compile") or updater_kwargs.get("cudagraphs"):
            raise ValueError("DDPSACUpdater runs the loss eagerly through DistributedDataParallel: "
                             "compile=True and cudagraphs=True are not supported")
        super().__init__(loss, optimizers, target_updater, utd_ratio, **updater_kwargs)
        if not dist.is_initialized():
            raise RuntimeError("DDPSACUpdater needs an initialised process group: call init_ddp() first.")
        # DDP broadcasts the trained parameters; the target networks (and any rank-seeded buffer)
        # must start equal too, or the ranks' critic targets differ for thousands of updates
        for tensor in loss.state_dict().values():
            dist.broadcast(tensor, src=0)
        # targets are updated from identical parameters on every rank: no need to broadcast them
        self.ddp = DistributedDataParallel(
            _LossCall(loss), device_ids=device_ids, find_unused_parameters=True, broadcast_buffers=False
        )
        self._critic_loss: Callable = lambda td: self.ddp(td, "loss_critic")
        self._full_loss: Callable = lambda td: self.ddp(td, "forward")
        self._actor_loss: Callable = lambda td: self.ddp(td, "loss_actor_alpha")
