"""SERL's pixel encoder (``EncodingWrapper``) by name: one trunk per camera, pooling, bottleneck, and
the state vector; shared by the DrQ networks, BC, the reward classifier and VICE."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn

from torchrl_serl.modules.encoders import MobileNetV3SmallEncoder, MultiCameraEncoder, SmallConvEncoder, resnet10

ENCODERS = ("resnet10", "small", "mobilenet")


def make_trunk(encoder: str, channels_last: bool = False, bf16: bool = False) -> nn.Module:
    """One camera trunk by name: ``"resnet10"`` (SERL's pretrained trunk), ``"small"`` or ``"mobilenet"``.
    ``bf16``: the frozen trunk computes in bfloat16 (``"small"`` is trained: use the learner's ``bf16``)."""
    if encoder == "resnet10":
        return resnet10(channels_last=channels_last, bf16=bf16)
    if encoder == "small":
        if bf16:
            raise ValueError("encoder='small' is trained with the critic: trunk bf16 is for a frozen trunk; "
                             "the learner's bf16 option covers a trained one")
        return SmallConvEncoder()
    if encoder == "mobilenet":
        return MobileNetV3SmallEncoder(channels_last=channels_last, bf16=bf16)
    raise ValueError(f"unknown encoder {encoder!r}; choose one of {ENCODERS}")


def make_pixel_encoder(
    camera_keys: Sequence[str] = ("front", "wrist"),
    image_size: int = 128,
    *,
    encoder: str = "resnet10",
    pretrained_path: str | Path | None = None,
    trust_pickle: bool = False,
    freeze_trunk: bool = True,
    share_trunk: bool = True,
    pooling: str | None = None,
    bottleneck_dim: int = 256,
    proprio_key: str | None = "observation",
    proprio_dim: int = 7,
    channels_last: bool = False,
    trunk_bf16: bool = False,
) -> MultiCameraEncoder:
    """A :class:`~torchrl_serl.modules.encoders.MultiCameraEncoder` reading uint8 ``[*B, 3, H, W]``
    images (and the state under ``proprio_key``), writing ``embedding`` ``[*B, E]``.

    Args:
        camera_keys: image keys.
        image_size: square image side in px (SERL: 128).
        encoder: ``"resnet10"`` (SERL's default: frozen, learned spatial embeddings), ``"small"``
            (SERL's 4-layer conv, trained, average pooling) or ``"mobilenet"`` (MobileNetV3-small).
        pretrained_path: local trunk weights (SERL ``.pkl`` or torch ``state_dict``); never downloaded.
        trust_pickle: allow a SERL ``.pkl`` (unpickling runs code; refused otherwise).
        freeze_trunk: freeze the trunk (SERL: frozen pretrained ResNet-10). Ignored for ``"small"``,
            which is always trained (it has no pretrained weights).
        share_trunk: one trunk for all cameras (identical when frozen; batches cameras in one call).
        pooling: default ``"spatial_learned_embeddings"``, ``"avg"`` for ``"small"`` (SERL's choices).
        bottleneck_dim: per-camera projection width (SERL: 256; VICE's classifier: 512).
        proprio_key: state key appended to the embedding; ``None`` for images only (SERL's classifiers).
        proprio_dim: state vector size (pixel tasks: 7).
        channels_last: channels-last convolutions in the trunk.
        trunk_bf16: the frozen trunk computes in bfloat16 autocast (features within ~1% of float32).
    """
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {ENCODERS}")
    if encoder == "small":
        freeze_trunk = False
        if pretrained_path is not None:
            raise ValueError("encoder='small' is trained from scratch; pretrained_path must be None")
    camera_keys = tuple(camera_keys)
    if share_trunk:
        trunk = make_trunk(encoder, channels_last, trunk_bf16)
    else:
        trunk = {k: make_trunk(encoder, channels_last, trunk_bf16) for k in camera_keys}
    pixel_encoder = MultiCameraEncoder(
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
        pixel_encoder.load_pretrained(pretrained_path, trust_pickle=trust_pickle)
    return pixel_encoder
