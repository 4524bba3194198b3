"""SERL's pixel (DrQ) networks: shared multi-camera encoder, tanh-Gaussian actor, critic ensemble."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tensordict.nn import TensorDictModuleBase, TensorDictSequential
from torchrl.modules import ProbabilisticActor

from torchrl_serl.modules.encoders import MultiCameraEncoder
from torchrl_serl.modules.pixel_encoder import make_pixel_encoder
from torchrl_serl.modules.sac_networks import make_sac_actor, make_sac_critic


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
    trunk_bf16: bool = False,
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
        proprio_key, encoder, pretrained_path, trust_pickle, freeze_trunk, share_trunk, pooling,
            bottleneck_dim, channels_last, trunk_bf16: the encoder's, see
            :func:`~torchrl_serl.modules.pixel_encoder.make_pixel_encoder`.
        num_critics: ensemble size (SERL: 10).
        hidden: MLP widths of actor and critic (256, 256).
        actor_kwargs: extra :func:`~torchrl_serl.modules.sac_networks.make_sac_actor` options
            (e.g. ``std_min``, ``std_max``).
    """
    enc = make_pixel_encoder(
        camera_keys, image_size, encoder=encoder, pretrained_path=pretrained_path, trust_pickle=trust_pickle,
        freeze_trunk=freeze_trunk, share_trunk=share_trunk, pooling=pooling, bottleneck_dim=bottleneck_dim,
        proprio_key=proprio_key, proprio_dim=proprio_dim, channels_last=channels_last,
        trunk_bf16=trunk_bf16,
    )
    emb = enc.out_features
    actor = make_sac_actor(emb, action_dim, hidden=hidden, in_keys=("embedding",), **(actor_kwargs or {}))
    qvalue = make_sac_critic(emb, action_dim, num_critics=num_critics, hidden=hidden, in_keys=("embedding", "action"))
    return actor, qvalue, enc


def make_drq_policy(actor: ProbabilisticActor, encoder: MultiCameraEncoder) -> TensorDictSequential:
    """Acting policy for collectors: ``encoder`` (images + state -> ``embedding``) then ``actor``."""
    return TensorDictSequential(encoder, actor)
