"""SERL's SAC (state) and DrQ (pixels) learners from the recipe options: networks, loss and
target-network updater (with HIL-SERL's grasp critic on request), plus the env transform that caches
a DrQ agent's trunk features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict.nn import TensorDictSequential
from torch import nn
from torchrl.objectives import SoftUpdate

from torchrl_serl.training.config import DrQConfig, SACConfig


@dataclass
class GraspCriticComponents:
    """HIL-SERL's grasp critic beside a DrQ learner: ``critic`` (the shared encoder, its gradient
    stopped, then ``head`` writing ``grasp_q_values`` ``[*B, 3]``), its double-DQN loss and
    target-network updater. Only ``head`` is trained by the grasp loss (the arm critic trains the encoder)."""

    critic: nn.Module
    head: nn.Module
    loss: nn.Module
    target_updater: SoftUpdate


@dataclass
class SACComponents:
    """The pieces of a SERL SAC/DrQ learner: the acting ``policy`` (encoder + actor for pixels,
    + the grasp critic's gripper command with ``grasp``), actor, critic ensemble, loss and
    target-network updater."""

    policy: nn.Module
    actor: nn.Module
    critic: nn.Module
    loss: nn.Module
    target_updater: SoftUpdate
    grasp: GraspCriticComponents | None = None


def make_sac_agent(
    cfg: SACConfig,
    obs_dim: int,
    action_dim: int,
    device: str | torch.device = "cpu",
    encoder: nn.Module | None = None,
) -> SACComponents:
    """SERL's state SAC: tanh-Gaussian actor, LayerNorm critic ensemble, :class:`SERLSACLoss`.

    ``obs_dim`` is the size of ``observation`` ``[*B, D]`` (or of ``embedding`` with an encoder).
    """
    from torchrl_serl.modules.sac_networks import make_sac_actor, make_sac_critic
    from torchrl_serl.objectives.sac import SERLSACLoss

    actor = make_sac_actor(obs_dim, action_dim, hidden=cfg.hidden, layer_norm=cfg.layer_norm, encoder=encoder,
                           std_max=cfg.std_max, weight_init=cfg.actor_init, device=device)
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
    return SACComponents(policy=actor, actor=actor, critic=critic, loss=loss, target_updater=SoftUpdate(loss, tau=cfg.tau))


def make_drq_agent(
    cfg: DrQConfig,
    camera_keys: tuple[str, ...],
    image_size: int,
    proprio_dim: int,
    action_dim: int,
    device: str | torch.device = "cpu",
    grasp_critic_hidden: tuple[int, ...] | None = None,
) -> SACComponents:
    """SERL's DrQ: shared multi-camera encoder (frozen ResNet-10 by default), ensemble critic,
    :class:`~torchrl_serl.objectives.drq.DrQLoss` with random-shift augmentation inside the loss.

    With ``cfg.feature_views = K >= 1`` the loss reads cached trunk features of ``K`` views and
    the policy reads view 0 of them: the env needs :func:`make_trunk_features` on top.

    With ``grasp_critic_hidden`` (HIL-SERL's hybrid agent, ``sac_hybrid_single.py``): SAC learns
    the first ``action_dim - 1`` action dims (its batches need ``action[..., :-1]``), and a grasp
    critic with an MLP head of these widths (HIL-SERL: 128, 128) on the shared encoder's
    stop-gradient embedding scores the gripper command open / stay / close; the policy acts with
    its best command (:func:`~torchrl_serl.modules.sac_networks.greedy_grasp_command`). The target
    entropy stays -``action_dim``/2 (HIL-SERL's, from the full action) unless ``cfg`` sets one."""
    from torchrl_serl.modules.drq_networks import make_drq_networks
    from torchrl_serl.modules.encoders.cached_features import CachedFeaturesEncoder
    from torchrl_serl.modules.sac_networks import greedy_grasp_command
    from torchrl_serl.objectives.drq import DrQLoss

    if cfg.feature_views < 0:
        raise ValueError(f"drq.feature_views must be >= 0 (0: exact path), got {cfg.feature_views}")
    grasp = grasp_critic_hidden is not None
    target_entropy = cfg.target_entropy
    if target_entropy is None:
        target_entropy = -action_dim / 2 if grasp else "auto"
    if grasp:
        action_dim -= 1

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
        channels_last=cfg.channels_last,
        trunk_bf16=cfg.trunk_bf16,
        actor_kwargs={"std_max": cfg.std_max, "weight_init": cfg.actor_init, "device": device},
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
        target_entropy=target_entropy,
    )
    loss.make_value_estimator(gamma=cfg.discount)
    acting_encoder = CachedFeaturesEncoder(encoder) if cfg.feature_views > 0 else encoder
    policy = TensorDictSequential(acting_encoder, actor)
    grasp_components = None
    if grasp:
        grasp_components = _make_grasp_critic(acting_encoder, encoder.out_features, grasp_critic_hidden, cfg, device)
        # the actor writes the arm's action, the grasp critic's best gripper command completes it
        policy = TensorDictSequential(acting_encoder, actor, *grasp_components.critic.module[1:],
                                      greedy_grasp_command())
    return SACComponents(policy=policy, actor=actor, critic=critic, loss=loss,
                         target_updater=SoftUpdate(loss, tau=cfg.tau), grasp=grasp_components)


def _make_grasp_critic(encoder, embedding_dim: int, hidden: tuple[int, ...], cfg: DrQConfig, device) -> GraspCriticComponents:
    from torchrl_serl.modules.sac_networks import make_grasp_critic
    from torchrl_serl.objectives.grasp_critic import GraspCriticLoss

    critic = make_grasp_critic(embedding_dim, hidden=hidden, in_keys=("embedding",), encoder=encoder).to(device)
    loss = GraspCriticLoss(critic)
    loss.make_value_estimator(gamma=cfg.discount)
    return GraspCriticComponents(critic=critic, head=critic.module[-1], loss=loss,
                                 target_updater=SoftUpdate(loss, tau=cfg.tau))


def make_trunk_features(agent: SACComponents, cfg: DrQConfig, seed: int, num_views: int | None = None):
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
    return TrunkFeatures(trunk, encoder.camera_keys, encoder.image_size, views, cfg.augment_pad, seed=seed,
                         compile_trunk=cfg.trunk_compile)
