"""Builders for SERL's pixel (DrQ) networks: shared multi-camera encoder, tanh-Gaussian actor, critic ensemble."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tensordict.nn import TensorDictModuleBase, TensorDictSequential
from torch import nn
from torchrl.modules import ProbabilisticActor

from torchrl_serl.modules.encoders import MobileNetV3SmallEncoder, MultiCameraEncoder, SmallConvEncoder, resnet10
from torchrl_serl.modules.sac_networks import make_sac_actor, make_sac_critic

ENCODERS = ("resnet10", "small", "mobilenet")


def make_trunk(encoder: str, channels_last: bool = False) -> nn.Module:
    """One camera trunk by name: ``"resnet10"`` (SERL's pretrained trunk), ``"small"`` or ``"mobilenet"``."""
    if encoder == "resnet10":
        return resnet10(channels_last=channels_last)
    if encoder == "small":
        return SmallConvEncoder()
    if encoder == "mobilenet":
        return MobileNetV3SmallEncoder(channels_last=channels_last)
    raise ValueError(f"unknown encoder {encoder!r}; choose one of {ENCODERS}")


def make_drq_networks(
    camera_keys: Sequence[str] = ("front", "wrist"),
    image_size: int = 128,
    proprio_dim: int = 7,
    action_dim: int = 4,
    proprio_key: str | None = "observation",
    encoder: str = "resnet10",
    pretrained_path: str | Path | None = None,
    trust_pickle: bool = False,
    freeze_trunk: bool = True,
    share_trunk: bool = True,
    pooling: str | None = None,
    bottleneck_dim: int = 256,
    num_critics: int = 10,
    hidden: Sequence[int] = (256, 256),
    channels_last: bool = False,
    actor_kwargs: dict | None = None,
) -> tuple[ProbabilisticActor, TensorDictModuleBase, MultiCameraEncoder]:
    """SERL's DrQ networks, ready for :class:`~torchrl_serl.objectives.drq.DrQLoss`.

    The encoder (``MultiCameraEncoder``) writes ``embedding`` ``[*B, E]``; the actor reads
    ``embedding`` and writes ``loc``, ``scale``, ``action`` ``[*B, A]``; the critic ensemble reads
    ``(embedding, action)`` and writes ``state_action_value`` ``[*B, N, 1]``. The loss computes the
    embedding once per update and feeds both; for acting, wrap with :func:`make_drq_policy`.

    Args:
        camera_keys: image keys, uint8 ``[*B, 3, H, W]``.
        image_size: square image side in px (SERL: 128).
        proprio_dim: state vector size (pixel tasks: 7).
        action_dim: ``A`` (4).
        proprio_key: state key fed to the encoder; ``None`` for images only.
        encoder: ``"resnet10"`` (SERL default, frozen, ``learned spatial embeddings``), ``"small"``
            (SERL's 4-layer conv, trained, avg pooling) or ``"mobilenet"`` (MobileNetV3-small).
        pretrained_path: local trunk weights (SERL ``.pkl`` or torch ``state_dict``); never downloaded.
        trust_pickle: allow a SERL ``.pkl`` (unpickling runs code; refused otherwise).
        freeze_trunk: freeze the trunk (SERL: frozen pretrained ResNet-10). Ignored for ``"small"``,
            which is always trained (it has no pretrained weights).
        share_trunk: one trunk for all cameras (identical when frozen; batches cameras in one call).
        pooling: default ``"spatial_learned_embeddings"``, ``"avg"`` for ``"small"`` (SERL's choices).
        bottleneck_dim: per-camera projection width (256).
        num_critics: ensemble size (SERL: 10).
        hidden: MLP widths of actor and critic (256, 256).
        channels_last: channels-last convolutions in the trunk.
        actor_kwargs: extra :func:`~torchrl_serl.modules.sac_networks.make_sac_actor` options
            (e.g. ``std_min``, ``std_max``).
    """
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {ENCODERS}")
    if encoder == "small":
        freeze_trunk = False
        if pretrained_path is not None:
            raise ValueError("encoder='small' is trained from scratch; pretrained_path must be None")
    camera_keys = tuple(camera_keys)
    if share_trunk:
        trunk = make_trunk(encoder, channels_last)
    else:
        trunk = {k: make_trunk(encoder, channels_last) for k in camera_keys}
    enc = MultiCameraEncoder(
        trunk,
        camera_keys=camera_keys,
        image_size=image_size,
        pooling=pooling or ("avg" if encoder == "small" else "spatial_learned_embeddings"),
        bottleneck_dim=bottleneck_dim,
        proprio_key=proprio_key,
        proprio_dim=proprio_dim,
        freeze_trunk=freeze_trunk,
    )
    if pretrained_path is not None:
        enc.load_pretrained(pretrained_path, trust_pickle=trust_pickle)
    emb = enc.out_features
    actor = make_sac_actor(emb, action_dim, hidden=hidden, in_keys=("embedding",), **(actor_kwargs or {}))
    qvalue = make_sac_critic(emb, action_dim, num_critics=num_critics, hidden=hidden, in_keys=("embedding", "action"))
    return actor, qvalue, enc


def make_drq_policy(actor: ProbabilisticActor, encoder: MultiCameraEncoder) -> TensorDictSequential:
    """Acting policy for collectors: ``encoder`` (images + state -> ``embedding``) then ``actor``."""
    return TensorDictSequential(encoder, actor)
