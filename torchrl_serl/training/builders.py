"""Builders the recipes share: envs, SAC agent + optimizers, the UTD update, buffers, collectors.

Each returns plain TorchRL objects (``EnvBase``, ``ProbabilisticActor``, ``LossModule``,
``TensorDictReplayBuffer``, ``Collector``) so a recipe reads top to bottom and a user can swap
any piece.
"""

from __future__ import annotations

import contextlib
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictSequential
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs import EnvBase
from torchrl.objectives import SoftUpdate

from torchrl_serl.training.config import DrQConfig, EnvConfig, RobotConfig, SACConfig

# Keys the policy and collector write that the learner never reads (the DrQ loss re-encodes
# the images): not worth buffer memory.
_NOT_STORED = ("loc", "scale", "embedding", "collector")
_TASKS = ("panda", "piper")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (the env is seeded by its builder)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_sim_env(cfg: EnvConfig, seed: int, device: str | torch.device = "cpu") -> EnvBase:
    """The simulated pick-cube task named by ``cfg.task`` (``panda`` | ``piper``)."""
    if cfg.task not in _TASKS:
        raise ValueError(f"env.task must be one of {_TASKS}, got {cfg.task!r}")
    if cfg.task == "panda":
        from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv as task_cls
    else:
        from torchrl_serl.envs.sim.piper_pick_cube import PiperPickCubeEnv as task_cls
    return task_cls(
        pixels=cfg.pixels,
        image_size=cfg.image_size,
        control_hz=cfg.control_hz,
        action_scale_m=cfg.action_scale_m,
        reward_type=cfg.reward_type,
        max_episode_steps=cfg.max_episode_steps,
        device=device,
        seed=seed,
    )


_CAMERAS = ("realsense", "opencv", "test_pattern")


def make_arm_env(robot: RobotConfig, cfg: EnvConfig, seed: int) -> EnvBase:
    """The real arm named by ``cfg.task`` (``panda`` -> :class:`FrankaEnv`, ``piper`` ->
    :class:`PiperEnv`) at ``robot.address`` (Franka host / Piper CAN channel), with the
    ``front``/``wrist`` cameras of ``robot.camera`` kind when ``cfg.pixels``."""
    if cfg.task not in _TASKS:
        raise ValueError(f"env.task must be one of {_TASKS}, got {cfg.task!r}")
    if not robot.address:
        raise ValueError("--robot.address is required with --robot.real true (Franka host or Piper CAN channel)")
    from torchrl_serl.envs.robots import FrankaEnv, PiperEnv

    cameras = _make_cameras(robot, seed) if cfg.pixels else None
    common = dict(
        cameras=cameras, image_size=(cfg.image_size, cfg.image_size), control_hz=cfg.control_hz,
        max_episode_steps=cfg.max_episode_steps, seed=seed,
    )
    if cfg.task == "panda":
        return FrankaEnv(host=robot.address, **common)
    return PiperEnv(can_channel=robot.address, **common)


def _make_cameras(robot: RobotConfig, seed: int) -> dict:
    if robot.camera not in _CAMERAS:
        raise ValueError(f"robot.camera must be one of {_CAMERAS}, got {robot.camera!r}")
    ids = [i for i in robot.camera_ids.split(",") if i] if robot.camera_ids else []
    if ids and len(ids) != 2:
        raise ValueError(f"robot.camera_ids must name 2 cameras (front,wrist), got {robot.camera_ids!r}")
    names = ("front", "wrist")
    if robot.camera == "test_pattern":
        from torchrl_serl.envs.cameras.test_pattern import TestPatternCamera

        return {name: TestPatternCamera(seed=seed + i) for i, name in enumerate(names)}
    if robot.camera == "opencv":
        from torchrl_serl.envs.cameras.opencv import OpenCVCamera

        sources = [int(i) if i.isdigit() else i for i in ids] or [0, 1]
        return {name: OpenCVCamera(src) for name, src in zip(names, sources)}
    from torchrl_serl.envs.cameras.realsense import RealSenseCamera

    serials = ids or [None, None]
    return {name: RealSenseCamera(serial) for name, serial in zip(names, serials)}


_INTERVENTION_DEVICES = ("spacemouse", "keyboard")


def make_intervention_source(kind: str, stack: contextlib.ExitStack):
    """A human-action source for :class:`~torchrl_serl.envs.transforms.intervention.Intervention`:
    a SpaceMouse, or the terminal's keyboard (its reader thread is stopped when ``stack`` closes)."""
    if kind not in _INTERVENTION_DEVICES:
        raise ValueError(f"intervention device must be one of {_INTERVENTION_DEVICES}, got {kind!r}")
    if kind == "spacemouse":
        from torchrl_serl.envs.transforms.spacemouse import SpaceMouseSource

        return SpaceMouseSource()
    import queue

    from torchrl_serl.envs.transforms.keyboard import KeyboardSource, TerminalKeyReader

    keys: queue.Queue = queue.Queue()
    stack.enter_context(TerminalKeyReader(keys))
    return KeyboardSource(keys)


def make_env(cfg: EnvConfig, robot: RobotConfig | None, seed: int, device: str | torch.device = "cpu") -> EnvBase:
    """The real arm when ``robot.real``, else the simulated twin of the same task."""
    if robot is not None and robot.real:
        return make_arm_env(robot, cfg, seed)
    return make_sim_env(cfg, seed, device)


@dataclass
class SACAgent:
    """The pieces of a SERL SAC/DrQ learner: the acting ``policy`` (encoder + actor for pixels),
    actor, critic ensemble, loss and target-network updater."""

    policy: nn.Module
    actor: nn.Module
    critic: nn.Module
    loss: nn.Module
    target_updater: SoftUpdate


def make_sac_agent(
    cfg: SACConfig,
    obs_dim: int,
    action_dim: int,
    device: str | torch.device = "cpu",
    encoder: nn.Module | None = None,
) -> SACAgent:
    """SERL's state SAC: tanh-Gaussian actor, LayerNorm critic ensemble, :class:`SERLSACLoss`.

    ``obs_dim`` is the size of ``observation`` ``[*B, D]`` (or of ``embedding`` with an encoder).
    """
    from torchrl_serl.modules.sac_networks import make_sac_actor, make_sac_critic
    from torchrl_serl.objectives.sac import SERLSACLoss

    actor = make_sac_actor(obs_dim, action_dim, hidden=cfg.hidden, layer_norm=cfg.layer_norm, encoder=encoder,
                           device=device)
    critic = make_sac_critic(
        obs_dim, action_dim, num_critics=cfg.num_critics, hidden=cfg.hidden, layer_norm=cfg.layer_norm, encoder=encoder
    )
    actor, critic = actor.to(device), critic.to(device)
    loss = SERLSACLoss(
        actor,
        critic,
        critic_subset=cfg.critic_subsample,
        backup_entropy=cfg.backup_entropy,
        alpha_init=cfg.alpha_init,
        target_entropy="auto" if cfg.target_entropy is None else cfg.target_entropy,
    )
    loss.make_value_estimator(gamma=cfg.discount)
    return SACAgent(policy=actor, actor=actor, critic=critic, loss=loss, target_updater=SoftUpdate(loss, tau=cfg.tau))


def make_drq_agent(
    cfg: DrQConfig,
    camera_keys: tuple[str, ...],
    image_size: int,
    proprio_dim: int,
    action_dim: int,
    device: str | torch.device = "cpu",
) -> SACAgent:
    """SERL's DrQ: shared multi-camera encoder (frozen ResNet-10 by default), ensemble critic,
    :class:`~torchrl_serl.objectives.drq.DrQLoss` with random-shift augmentation inside the loss.

    With ``cfg.feature_views = K >= 1`` the loss reads cached trunk features of ``K`` views and
    the policy reads view 0 of them: the env needs :func:`make_trunk_features` on top."""
    from torchrl_serl.modules.drq_networks import make_drq_networks, make_drq_policy
    from torchrl_serl.modules.encoders.cached_features import CachedFeaturesEncoder
    from torchrl_serl.objectives.drq import DrQLoss

    if cfg.feature_views < 0:
        raise ValueError(f"drq.feature_views must be >= 0 (0: exact path), got {cfg.feature_views}")

    actor, critic, encoder = make_drq_networks(
        camera_keys=camera_keys,
        image_size=image_size,
        proprio_dim=proprio_dim,
        action_dim=action_dim,
        encoder=cfg.encoder,
        pretrained_path=cfg.pretrained_path or None,
        trust_pickle=cfg.trust_pickle,
        num_critics=cfg.num_critics,
        hidden=cfg.hidden,
        actor_kwargs={"device": device},
    )
    actor, critic, encoder = actor.to(device), critic.to(device), encoder.to(device)
    loss = DrQLoss(
        actor,
        critic,
        encoder,
        augment=cfg.augment_pad > 0,
        pad=cfg.augment_pad,
        cached_features=cfg.feature_views > 0,
        critic_subset=cfg.critic_subsample,
        backup_entropy=cfg.backup_entropy,
        alpha_init=cfg.alpha_init,
        target_entropy="auto" if cfg.target_entropy is None else cfg.target_entropy,
    )
    loss.make_value_estimator(gamma=cfg.discount)
    if cfg.feature_views > 0:
        policy = TensorDictSequential(CachedFeaturesEncoder(encoder), actor)
    else:
        policy = make_drq_policy(actor, encoder)
    return SACAgent(policy=policy, actor=actor, critic=critic, loss=loss, target_updater=SoftUpdate(loss, tau=cfg.tau))


def make_trunk_features(agent: SACAgent, cfg: DrQConfig, seed: int, num_views: int | None = None):
    """The env transform that encodes each frame once for a cached-feature agent
    (``cfg.feature_views >= 1``): :class:`~torchrl_serl.envs.transforms.TrunkFeatures` with a
    copy of the agent's frozen trunk, so the transform can live in a collector process.
    ``num_views`` overrides ``cfg.feature_views`` (an evaluation env needs only view 0)."""
    import copy

    from torchrl_serl.envs.transforms.trunk_features import TrunkFeatures

    if cfg.feature_views < 1:
        raise ValueError("make_trunk_features needs drq.feature_views >= 1")
    encoder = agent.loss.encoder
    trunk = copy.deepcopy(encoder.trunk(encoder.camera_keys[0])).cpu()
    views = cfg.feature_views if num_views is None else num_views
    return TrunkFeatures(trunk, encoder.camera_keys, encoder.image_size, views, cfg.augment_pad, seed=seed)


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
):
    """RLPD buffer: online transitions + the demos at ``demos_path``, each batch exactly
    ``demo_fraction`` demos (:class:`~torchrl_serl.data.OnlineDemoReplayBuffer`, memory-mapped under
    ``scratch_dir``). Interventions can be appended later with ``extend_demos``. ``encode`` maps the
    demo transitions before they are stored (e.g. :meth:`TrunkFeatures.encode_transitions` then
    dropping the images).

    ``scratch_dir`` is working memory, emptied here: a resumed run refills it from its checkpoint.
    """
    from torchrl_serl.data.demos import load_demos
    from torchrl_serl.data.replay import OnlineDemoReplayBuffer

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
    from torchrl_serl.data.pixel_storage import FrameDedupReplayBuffer

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


def make_collector(
    env: EnvBase,
    policy: nn.Module,
    frames_per_batch: int = 1,
    random_steps: int = 0,
) -> Collector:
    """An endless TorchRL :class:`Collector`: uniform-random actions for ``random_steps``, then
    the (stochastic) policy. The recipe decides when to stop."""
    return Collector(
        env,
        policy,
        frames_per_batch=frames_per_batch,
        total_frames=-1,
        init_random_frames=random_steps,
        auto_register_policy_transforms=False,
    )


def parameters_checksum(params: Iterable[torch.Tensor]) -> float:
    """Sum of all parameter values: a cheap fingerprint to check that weights carried over."""
    return float(sum(p.detach().double().sum() for p in params))


__all__ = [
    "SACAgent",
    "SACUpdater",
    "make_arm_env",
    "make_collector",
    "make_demo_replay_buffer",
    "make_drq_agent",
    "make_env",
    "make_intervention_source",
    "make_replay_buffer",
    "make_sac_agent",
    "make_pixel_replay_buffer",
    "make_sac_optimizers",
    "make_sim_env",
    "make_trunk_features",
    "online_size",
    "parameters_checksum",
    "seed_everything",
    "transitions",
]
