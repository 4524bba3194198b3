"""SERL's learner step: the high update-to-data SAC/DrQ update and its optimizers."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from torchrl_serl.training.config import SACConfig


def make_sac_optimizers(loss: nn.Module, cfg: SACConfig, capturable: bool = False) -> dict[str, torch.optim.Optimizer]:
    """Separate Adam optimizers for critic, actor and temperature (SERL steps them separately).

    A pixel loss's trainable encoder parameters (``loss.encoder_params``) belong to the critic:
    SERL trains the shared encoder with the critic loss only. ``capturable=True`` keeps Adam's
    step counts on the parameters' device, as a CUDA-graph update (``SACUpdater(cudagraphs=True)``)
    needs.
    """
    critic_params = list(loss.qvalue_network_params.values(True, True))
    encoder_params = getattr(loss, "encoder_params", None)
    if encoder_params is not None:
        critic_params += [p for p in encoder_params.values(True, True) if p.requires_grad]
    critic_ids = {p.data_ptr() for p in critic_params}
    actor_params = [p for p in loss.actor_network_params.values(True, True) if p.data_ptr() not in critic_ids]
    from torchrl_serl.optim import make_optimizer

    # fused Adam: one kernel for all of an optimizer's parameters (the per-tensor loop showed up in
    # a py-spy profile of the CPU pixel learner)
    return {
        "critic_optim": make_optimizer(critic_params, lr=cfg.critic_lr, capturable=capturable),
        "actor_optim": make_optimizer(actor_params, lr=cfg.actor_lr, capturable=capturable),
        "alpha_optim": make_optimizer([loss.log_alpha], lr=cfg.alpha_lr, capturable=capturable),
    }


class SACUpdater:
    """SERL's high update-to-data learner step: ``utd_ratio - 1`` critic-only updates, then one
    full update (critic + actor + temperature on the same batch).

    Every critic update draws a fresh batch and moves the target networks by ``tau`` (SERL updates
    the targets inside each critic step). The full update calls ``loss(batch)`` once, so a pixel
    loss (:class:`~torchrl_serl.objectives.drq.DrQLoss`) encodes that batch once for all three
    losses; their gradients touch disjoint parameters, so one backward of the sum is exact.
    Batches are moved to the loss's device.

    Args:
        loss: a :class:`~torchrl_serl.objectives.SERLSACLoss` or ``DrQLoss``.
        optimizers: output of :func:`make_sac_optimizers`.
        target_updater: ``SoftUpdate`` on ``loss``.
        utd_ratio: critic updates per learner step (SERL: 8 state, 4 pixels), >= 1.
        compile: ``torch.compile`` the loss functions (CPU: 1.3-1.7x after compiling).
        cudagraphs: record each whole update (loss, backward, optimizer steps, target update) as
            one CUDA graph (:class:`tensordict.nn.CudaGraphModule`, as TorchRL's own SAC recipes
            do) and replay it: no kernel-launch or Python overhead left. Needs a CUDA loss,
            optimizers made with ``capturable=True`` and fixed batch shapes; with or without
            ``compile``. Load optimizer state before the first update: the graphs hold the
            tensors they recorded.
        bf16: run the losses under ``torch.autocast(dtype=torch.bfloat16)``; parameters, gradients
            and optimizer state stay float32 (CPU with AVX-512 BF16: ~1.5x W1 critic updates/s).

    Compiled and replayed updates run no data-dependent code, so the updater runs the loss's
    ``check_batch`` (missing keys, shapes, NaN/inf) on each batch before them.
    """

    def __init__(self, loss, optimizers, target_updater, utd_ratio: int, compile: bool = False,
                 cudagraphs: bool = False, bf16: bool = False) -> None:
        if isinstance(utd_ratio, bool) or not isinstance(utd_ratio, int) or utd_ratio < 1:
            raise ValueError(f"utd_ratio must be an int >= 1, got {utd_ratio!r}")
        self.device = next(loss.parameters()).device
        if cudagraphs:
            if self.device.type != "cuda":
                raise ValueError(f"cudagraphs=True needs a CUDA loss, got a loss on {self.device}")
            not_capturable = [name for name, optim in optimizers.items()
                              if not all(group.get("capturable", False) for group in optim.param_groups)]
            if not_capturable:
                raise ValueError(f"cudagraphs=True needs optimizers made with capturable=True "
                                 f"(make_sac_optimizers(..., capturable=True)); not capturable: {not_capturable}")
            for module in loss.actor_network.modules():
                for name, value in getattr(module, "distribution_kwargs", {}).items():
                    if name in ("low", "high") and not (
                        isinstance(value, torch.Tensor) and value.device == self.device
                    ):
                        raise ValueError(
                            f"cudagraphs=True needs the actor's distribution bound {name!r} as a tensor on "
                            f"{self.device} (a CUDA graph cannot record a host copy), got {value!r}: build it "
                            f"with make_sac_actor(..., device={str(self.device)!r})"
                        )
        self.optimizers = list(optimizers.values())
        self.critic_optim = optimizers["critic_optim"]
        self.target_updater = target_updater
        self.utd_ratio = utd_ratio
        if bf16:
            self._autocast = lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        else:
            self._autocast = contextlib.nullcontext
        self._critic_loss = torch.compile(loss.loss_critic) if compile else loss.loss_critic
        self._full_loss = torch.compile(loss) if compile else loss
        # compiled and replayed updates skip the loss's own data-dependent input checks
        checked_here = (compile or cudagraphs) and getattr(loss, "check_inputs", False)
        self._check_batch = loss.check_batch if checked_here else None
        self._critic_step, self._full_step = self._critic_update, self._full_update
        if cudagraphs:
            from tensordict.nn import CudaGraphModule

            # first call eager (compiles), second records: both outside the timed training loop
            self._critic_step = CudaGraphModule(self._critic_update, warmup=2, in_keys=[], out_keys=[])
            self._full_step = CudaGraphModule(self._full_update, warmup=2, in_keys=[], out_keys=[])

    def _critic_update(self, batch: TensorDictBase) -> TensorDictBase:
        with self._autocast():
            out = self._critic_loss(batch)
        self.critic_optim.zero_grad(set_to_none=True)
        out["loss_qvalue"].backward()
        self.critic_optim.step()
        self.target_updater.step()
        return _detached(out)

    def _full_update(self, batch: TensorDictBase) -> TensorDictBase:
        with self._autocast():
            out = self._full_loss(batch)
        for optim in self.optimizers:
            optim.zero_grad(set_to_none=True)
        (out["loss_qvalue"] + out["loss_actor"] + out["loss_alpha"]).backward()
        for optim in self.optimizers:
            optim.step()
        self.target_updater.step()
        return _detached(out)

    def _batch(self, sample: Callable[[], TensorDictBase]) -> TensorDictBase:
        batch = sample().to(self.device, non_blocking=True)
        if self._check_batch is not None:
            self._check_batch(batch)
        return batch

    def update(self, sample: Callable[[], TensorDictBase]) -> dict[str, float]:
        """Run one learner step on batches from ``sample()``; return detached diagnostics."""
        for _ in range(self.utd_ratio - 1):
            self._critic_step(self._batch(sample))
        out = self._full_step(self._batch(sample))
        return {f"train/{k}": float(v) for k, v in out.items()}


def _detached(out) -> TensorDictBase:
    """A loss output (TensorDict or dict of scalars) as a detached TensorDict (what
    ``CudaGraphModule`` can return)."""
    return TensorDict({k: v.detach() for k, v in out.items()}, batch_size=[])
