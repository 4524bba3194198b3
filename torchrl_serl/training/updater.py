"""SERL's learner step: the high update-to-data SAC/DrQ update and its optimizers."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from torchrl_serl import precision
from torchrl_serl.optim import clip_grad_norm, make_optimizer
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
    # fused Adam: one kernel for all of an optimizer's parameters (the per-tensor loop showed up in
    # a py-spy profile of the CPU pixel learner)
    return {
        "critic_optim": make_optimizer(critic_params, lr=cfg.critic_lr, capturable=capturable),
        "actor_optim": make_optimizer(actor_params, lr=cfg.actor_lr, capturable=capturable),
        "alpha_optim": make_optimizer([loss.log_alpha], lr=cfg.alpha_lr, capturable=capturable),
    }


class SACUpdater:
    """SERL's high update-to-data learner step, for state SAC and pixel DrQ alike.

    ``update(batch)`` takes one replay sample of ``[utd_ratio * B]`` transitions, splits it into
    ``utd_ratio`` disjoint minibatches of ``B`` (minibatch ``i`` holds rows ``i, i + utd_ratio, ...``),
    runs a critic-only update on each of the first ``utd_ratio - 1`` and one full update (critic +
    actor + temperature) on the last. Every critic update moves the target networks by ``tau``.
    The full update calls ``loss(minibatch)`` once, so a pixel loss
    (:class:`~torchrl_serl.objectives.drq.DrQLoss`) encodes it once for all three losses; their
    gradients touch disjoint parameters, so one backward of the sum is exact.

    SERL (``serl_launcher/agents/continuous/sac.py``, ``SACAgent.update_high_utd``) also takes one
    batch of ``utd_ratio * B`` (``examples/async_sac_state_sim`` samples
    ``batch_size * critic_actor_ratio``) and reshapes it into ``utd_ratio`` minibatches; it runs
    ``utd_ratio`` critic-only updates, then one actor + temperature update on the whole batch with
    the updated critic. SERL's pixel learner (``examples/async_drq_sim``) runs
    ``critic_actor_ratio - 1`` ``update_critics`` on fresh batches of ``B``, then
    ``update_high_utd(batch, utd_ratio=1)`` on one more: a critic update, then actor + temperature on
    those ``B`` rows. This one schedule serves both, and differs from SERL in two ways: the actor
    and temperature losses see the critic from before the last critic update (the fused full
    update above), and they read the last minibatch's ``B`` rows, as SERL's pixel learner, not all
    ``utd_ratio * B`` (``actor_on_whole_sample=True`` runs SERL's state schedule instead). A third
    difference is optax's: SERL steps every optimizer on every update, the idle networks on zero
    gradients (``idle_optimizer_steps=True`` does so). The strided split gives every minibatch its
    share of an :class:`~torchrl_serl.data.OnlineDemoReplayBuffer` sample, whose demo rows come first.

    Args:
        loss: a :class:`~torchrl_serl.objectives.SERLSACLoss` or ``DrQLoss``.
        optimizers: ``critic_optim``, ``actor_optim``, ``alpha_optim`` (:func:`make_sac_optimizers`).
        target_updater: ``SoftUpdate`` on ``loss``.
        utd_ratio: critic updates per learner step (SERL: 8 state, 4 pixels), >= 1.
        max_grad_norms: optimizer name -> global L2 norm its gradients are clipped to before its
            step (SERL's ``clip_grad_norm``); the norm before clipping is logged as
            ``<name without _optim>_grad_norm``.
        lr_schedulers: optimizer name -> scheduler stepped after each of its steps (SERL's warm-up
            and cosine schedules, :func:`~torchrl_serl.optim.make_lr_schedule`). Not with ``cudagraphs``.
        compile: ``torch.compile`` the loss functions (CPU: 1.3-1.7x after compiling).
        cudagraphs: record each whole update (loss, backward, optimizer steps, target update) as
            one CUDA graph (:class:`tensordict.nn.CudaGraphModule`, as TorchRL's own SAC recipes
            do) and replay it: no kernel-launch or Python overhead left. Needs a CUDA loss,
            optimizers made with ``capturable=True`` and fixed batch shapes; with or without
            ``compile``. Load optimizer state before the first update: the graphs hold the
            tensors they recorded.
        bf16: run the losses under ``torch.autocast(dtype=torch.bfloat16)``; parameters, gradients
            and optimizer state stay float32 (CPU with AVX-512 BF16: ~1.5x W1 critic updates/s). Warns
            where bfloat16 is emulated (an AVX2-only CPU: ~10-20x slower, :mod:`torchrl_serl.precision`).
        idle_optimizer_steps: step every optimizer on every update, those whose loss the update
            leaves out (actor and temperature on the critic-only updates) with zero gradients, so
            Adam's momentum keeps moving them, as SERL's optax update does
            (``JaxRLTrainState.apply_gradients`` applies every optimizer; ``update`` replaces the
            idle losses by zero). Their learning-rate schedules step too, as optax counts those
            updates. Off (default): only the critic optimizer steps on a critic-only update. Not
            with ``cudagraphs`` (untested there).
        actor_on_whole_sample: SERL's state learner schedule: ``utd_ratio`` critic-only updates
            (one per minibatch, the last included), then one actor + temperature update on the
            whole ``[utd_ratio * B]`` sample with the updated critic (no target move). Costs an
            actor and critic pass over ``utd_ratio * B`` rows per learner step. Off (default): the
            fused full update on the last minibatch described above. Not with ``cudagraphs``.

    Compiled and replayed updates run no data-dependent code, so the updater runs the loss's
    ``check_batch`` (missing keys, shapes, NaN/inf) on each batch before them.
    """

    def __init__(self, loss, optimizers: Mapping[str, torch.optim.Optimizer], target_updater, utd_ratio: int,
                 max_grad_norms: Mapping[str, float] | None = None, lr_schedulers: Mapping | None = None,
                 compile: bool = False, cudagraphs: bool = False, bf16: bool = False,
                 idle_optimizer_steps: bool = False, actor_on_whole_sample: bool = False) -> None:
        if isinstance(utd_ratio, bool) or not isinstance(utd_ratio, int) or utd_ratio < 1:
            raise ValueError(f"utd_ratio must be an int >= 1, got {utd_ratio!r}")
        for name, value in (("idle_optimizer_steps", idle_optimizer_steps),
                            ("actor_on_whole_sample", actor_on_whole_sample)):
            if value and cudagraphs:
                raise ValueError(f"{name}=True is not supported with cudagraphs=True (untested)")
        max_grad_norms, lr_schedulers = dict(max_grad_norms or {}), dict(lr_schedulers or {})
        unknown = (max_grad_norms.keys() | lr_schedulers.keys()) - optimizers.keys()
        if unknown:
            raise ValueError(f"max_grad_norms/lr_schedulers name no optimizer: {sorted(unknown)}; "
                             f"optimizers: {sorted(optimizers)}")
        self.device = next(loss.parameters()).device
        if cudagraphs:
            if self.device.type != "cuda":
                raise ValueError(f"cudagraphs=True needs a CUDA loss, got a loss on {self.device}")
            if lr_schedulers:
                raise ValueError("cudagraphs=True cannot replay learning-rate schedules (the graphs hold the "
                                 "learning rate they recorded); pass lr_schedulers=None")
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
        self.optimizers = dict(optimizers)
        self.max_grad_norms = max_grad_norms
        self.lr_schedulers = lr_schedulers
        self.target_updater = target_updater
        self.utd_ratio = utd_ratio
        self.idle_optimizer_steps = idle_optimizer_steps
        self.actor_on_whole_sample = actor_on_whole_sample
        if bf16:
            precision.warn_if_emulated_bf16(self.device.type, "SACUpdater(bf16=True) (--bf16)")
            self._autocast = lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        else:
            self._autocast = contextlib.nullcontext
        self._critic_loss = torch.compile(loss.loss_critic) if compile else loss.loss_critic
        self._full_loss = torch.compile(loss) if compile else loss
        self._actor_loss = torch.compile(loss.loss_actor_alpha) if compile else loss.loss_actor_alpha
        # compiled and replayed updates skip the loss's own data-dependent input checks
        checked_here = (compile or cudagraphs) and getattr(loss, "check_inputs", False)
        self._check_batch = loss.check_batch if checked_here else None
        self._critic_step, self._full_step = self._critic_update, self._full_update
        if cudagraphs:
            from tensordict.nn import CudaGraphModule

            # first call eager (compiles), second records: both outside the timed training loop
            self._critic_step = CudaGraphModule(self._critic_update, warmup=2, in_keys=[], out_keys=[])
            self._full_step = CudaGraphModule(self._full_update, warmup=2, in_keys=[], out_keys=[])

    def _step(self, names: tuple[str, ...], loss: torch.Tensor, out: TensorDictBase,
              move_targets: bool = True) -> TensorDictBase:
        """Backward of ``loss``, then each named optimizer's clip, step and schedule (with
        ``idle_optimizer_steps``, then the other optimizers' steps on zero gradients), then the
        target networks' move."""
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        out = _detached(out)
        idle = [n for n in self.optimizers if n not in names] if self.idle_optimizer_steps else []
        for name in [*names, *idle]:
            optim = self.optimizers[name]
            if name in idle:  # a zero gradient, whatever the loss's backward left there
                for group in optim.param_groups:
                    for p in group["params"]:
                        p.grad = torch.zeros_like(p) if p.grad is None else p.grad.zero_()
            elif self.max_grad_norms.get(name) is not None:
                params = [p for group in optim.param_groups for p in group["params"]]
                norm = clip_grad_norm(params, self.max_grad_norms[name])
                out[f"{name.removesuffix('_optim')}_grad_norm"] = norm.detach()
            optim.step()
            if name in self.lr_schedulers:
                self.lr_schedulers[name].step()
        if move_targets:
            self.target_updater.step()
        return out

    def _critic_update(self, batch: TensorDictBase) -> TensorDictBase:
        with self._autocast():
            out = self._critic_loss(batch)
        return self._step(("critic_optim",), out["loss_qvalue"], out)

    def _full_update(self, batch: TensorDictBase) -> TensorDictBase:
        with self._autocast():
            out = self._full_loss(batch)
        return self._step(tuple(self.optimizers), out["loss_qvalue"] + out["loss_actor"] + out["loss_alpha"], out)

    def _actor_update(self, batch: TensorDictBase) -> TensorDictBase:
        with self._autocast():
            out = self._actor_loss(batch)
        return self._step(("actor_optim", "alpha_optim"), out["loss_actor"] + out["loss_alpha"], out,
                          move_targets=False)

    def minibatches(self, batch: TensorDictBase) -> list[TensorDictBase]:
        """``batch`` ``[utd_ratio * B]`` as ``utd_ratio`` disjoint ``[B]`` minibatches (rows ``i::utd_ratio``)."""
        return split_minibatches(batch, self.utd_ratio)

    def update(self, batch: TensorDictBase) -> dict[str, float]:
        """Run one learner step on ``batch`` ``[utd_ratio * B]``; return the full update's
        detached diagnostics as ``train/<name>`` floats."""
        batch = batch.to(self.device, non_blocking=True)
        if self._check_batch is not None:
            self._check_batch(batch)
        *critic_only, last = self.minibatches(batch)
        for minibatch in critic_only:
            self._critic_step(minibatch)
        if self.actor_on_whole_sample:
            out = self._critic_step(last)
            out.update(self._actor_update(batch))
        else:
            out = self._full_step(last)
        return {f"train/{k}": float(v) for k, v in out.items()}


class GraspCriticUpdater:
    """HIL-SERL's grasp critic learner, beside :class:`SACUpdater` on the same sample.

    ``update(batch)`` splits the ``[utd_ratio * B]`` sample as :class:`SACUpdater` does and makes
    one double-DQN update (:class:`~torchrl_serl.objectives.GraspCriticLoss`, then the target
    network moved by ``tau``) on each minibatch: HIL-SERL updates the grasp critic in every critic
    step, critic-only steps included (``networks_to_update`` holds both). The batch keeps the full
    action, gripper command last.

    Args:
        loss: a ``GraspCriticLoss``.
        optimizer: steps the grasp critic's head (the shared encoder belongs to the arm critic).
        target_updater: ``SoftUpdate`` on ``loss``.
        utd_ratio: minibatches per sample, as the SAC learner's.
    """

    def __init__(self, loss, optimizer: torch.optim.Optimizer, target_updater, utd_ratio: int) -> None:
        if isinstance(utd_ratio, bool) or not isinstance(utd_ratio, int) or utd_ratio < 1:
            raise ValueError(f"utd_ratio must be an int >= 1, got {utd_ratio!r}")
        self.loss, self.optimizer, self.target_updater, self.utd_ratio = loss, optimizer, target_updater, utd_ratio
        self.device = next(loss.parameters()).device

    def update(self, batch: TensorDictBase) -> dict[str, float]:
        """Run the grasp critic's updates on ``batch`` ``[utd_ratio * B]``; return the last one's
        diagnostics as ``train/<name>`` floats."""
        for minibatch in split_minibatches(batch.to(self.device, non_blocking=True), self.utd_ratio):
            out = self.loss(minibatch)
            self.optimizer.zero_grad(set_to_none=True)
            out["loss_grasp_critic"].backward()
            self.optimizer.step()
            self.target_updater.step()
        return {f"train/{k}": float(v.detach()) for k, v in out.items()}


def split_minibatches(batch: TensorDictBase, utd_ratio: int) -> list[TensorDictBase]:
    """``batch`` ``[utd_ratio * B]`` as ``utd_ratio`` disjoint ``[B]`` minibatches (rows ``i::utd_ratio``)."""
    if batch.ndim != 1 or batch.shape[0] % utd_ratio:
        raise ValueError(f"batch must be [B] with B divisible by utd_ratio={utd_ratio}, got {tuple(batch.shape)}")
    return [batch[i::utd_ratio].contiguous() for i in range(utd_ratio)]


def _detached(out) -> TensorDictBase:
    """A loss output (TensorDict or dict of scalars) as a detached TensorDict (what
    ``CudaGraphModule`` can return)."""
    return TensorDict({k: v.detach() for k, v in out.items()}, batch_size=[])
