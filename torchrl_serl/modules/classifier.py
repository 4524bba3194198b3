"""Binary success classifier (SERL's reward classifier and VICE discriminator) and its reward head."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn

from torchrl_serl.modules.pixel_encoder import make_pixel_encoder


def _check_finite(name: str, value: torch.Tensor) -> None:
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise ValueError(f"SuccessClassifier input {name!r} contains NaN or inf values")


class SuccessClassifier(TensorDictModuleBase):
    """Success logit from camera images and/or the state vector: ``encoder -> MLP -> logit [*B, 1]``.

    SERL's binary reward classifier is a frozen ResNet-10 trunk with learned spatial embeddings per
    camera (pass that as ``encoder``, e.g. a ``MultiCameraEncoder``), followed by
    ``Linear(256) -> Dropout(0.1) -> LayerNorm -> ReLU -> Linear(1)``; those are the defaults here.
    Without an encoder it classifies the state vector ``td[state_key]`` directly.

    The computation is split in two so VICE can mix and penalise in feature space, as SERL does:

    - :meth:`features` ``(td) -> TensorDict [*B]``: per-camera trunk features (no grad through a
      frozen trunk) and the float state vector ``[*B, D]`` if the classifier reads one;
    - :meth:`logits_from_features` ``(features) -> [*B, 1]``: pooling/projection + MLP head.

    ``forward(td)`` runs both and writes ``out_key`` (default ``"logit"``), float32 ``[*B, 1]``.

    Args:
        encoder: a ``MultiCameraEncoder`` (or any module with its ``encode_images`` /
            ``forward_features`` / ``camera_keys`` / ``proprio_key`` / ``out_features``
            interface, see ``docs/conventions.md``); the classifier reads its cameras and, if its
            ``proprio_key`` is set, the state. SERL classifies images only (``proprio_key=None``),
            so the classifier cannot succeed on proprioception alone. ``None``: classify the
            state vector ``td[state_key]``.
        in_features: MLP input width; default the encoder's ``out_features``. Without an encoder
            give the state size, or ``None`` to infer it on the first call (then run one forward
            before building the optimizer).

    Keyword Args:
        state_key: state key of an encoder-less classifier (default ``"observation"``).
        hidden_dims: MLP widths (SERL: ``(256,)``).
        dropout: dropout rate after each hidden linear layer (SERL: 0.1).
        activation: activation class (SERL reward classifier: ReLU, VICE: LeakyReLU).
        out_key: where ``forward`` writes the logit.
    """

    def __init__(
        self,
        encoder: nn.Module | None = None,
        in_features: int | None = None,
        *,
        state_key: NestedKey = "observation",
        hidden_dims: Sequence[int] = (256,),
        dropout: float = 0.1,
        activation: type[nn.Module] = nn.ReLU,
        out_key: NestedKey = "logit",
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if any(h <= 0 for h in hidden_dims):
            raise ValueError(f"hidden_dims must be positive, got {tuple(hidden_dims)}")
        self.encoder = encoder
        if encoder is not None:
            self.image_keys = tuple(encoder.camera_keys)
            self.state_key = encoder.proprio_key
            if in_features is None:
                in_features = encoder.out_features
        else:
            self.image_keys = ()
            self.state_key = state_key
        self.in_keys = [*self.image_keys, *([self.state_key] if self.state_key is not None else [])]
        self.out_keys = [out_key]
        self.out_key = out_key

        layers: list[nn.Module] = []
        width = in_features
        for hidden in hidden_dims:
            layers += [
                nn.Linear(width, hidden) if width is not None else nn.LazyLinear(hidden),
                nn.Dropout(dropout),
                nn.LayerNorm(hidden),
                activation(),
            ]
            width = hidden
        layers.append(nn.Linear(width, 1) if width is not None else nn.LazyLinear(1))
        self.head = nn.Sequential(*layers)

    def _check_inputs(self, td: TensorDictBase) -> None:
        missing = [k for k in self.in_keys if k not in td.keys(True)]
        if missing:
            raise KeyError(f"SuccessClassifier is missing input keys {missing}; it reads {self.in_keys}")
        for key in self.image_keys:
            img = td.get(key)
            if img.ndim < 3 or img.shape[-3] != 3:
                raise ValueError(
                    f"camera {key!r} must be channels-first [*B, 3, H, W] (docs/conventions.md), got {tuple(img.shape)}"
                )
            _check_finite(str(key), img)
        if self.state_key is not None:
            _check_finite(str(self.state_key), td.get(self.state_key))

    def features(self, td: TensorDictBase) -> TensorDict:
        """Per-sample inputs of the trainable part: trunk features ``[*B, C, h, w]`` per camera and/or
        the float state ``[*B, D]`` under its key."""
        self._check_inputs(td)
        if self.encoder is not None:
            feats = self.encoder.encode_images(td.select(*self.image_keys))
        else:
            feats = TensorDict({}, batch_size=td.batch_size, device=td.device)
        if self.state_key is not None:
            feats.set(self.state_key, td.get(self.state_key).float())
        return feats

    def logits_from_features(self, features: TensorDictBase) -> torch.Tensor:
        """Logit ``[*B, 1]`` from :meth:`features` (or a mixture of them)."""
        if self.encoder is None:
            x = features.get(self.state_key)
        else:
            state = features.get(self.state_key) if self.state_key is not None else None
            x = self.encoder.forward_features(features.select(*self.image_keys), state)
        return self.head(x)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        tensordict.set(self.out_key, self.logits_from_features(self.features(tensordict)))
        return tensordict

    def save(self, path: str | Path) -> None:
        """Write the weights and the input layout to ``path`` (``torch.save``), and the architecture
        of a :func:`make_pixel_classifier` classifier, which :func:`load_pixel_classifier` rebuilds."""
        blob = {"state_dict": self.state_dict(), "in_keys": [str(k) for k in self.in_keys]}
        if getattr(self, "architecture", None) is not None:
            blob["architecture"] = self.architecture
        torch.save(blob, path)

    def load(self, path: str | Path) -> SuccessClassifier:
        """Load weights written by :meth:`save` into this (identically built) classifier."""
        blob = torch.load(path, map_location="cpu", weights_only=True)
        expected = [str(k) for k in self.in_keys]
        if blob.get("in_keys") != expected:
            raise ValueError(f"{path} holds a classifier reading {blob.get('in_keys')}, this one reads {expected}")
        self.load_state_dict(blob["state_dict"])
        return self


RewardMode = Literal["prob", "log_prob", "threshold"]


class ClassifierReward(TensorDictModuleBase):
    """Turn a :class:`SuccessClassifier` logit into a reward and a success flag.

    ``mode``: ``"prob"`` -> ``sigmoid(logit)`` in [0, 1]; ``"log_prob"`` -> ``log sigmoid(logit)``
    in (-inf, 0] (VICE's event log-likelihood); ``"threshold"`` -> ``1`` if
    ``sigmoid(logit) >= threshold`` else ``0`` (SERL's reward classifier wrapper and VICE's critic
    update). ``success`` is ``sigmoid(logit) >= threshold`` in every mode.

    Rewards are computed without gradients and with the classifier in eval mode (no dropout), then
    its train/eval mode is restored. Writes ``reward_key`` float32 ``[*B, 1]`` and
    ``success_key`` bool ``[*B, 1]``.
    """

    MODES = ("prob", "log_prob", "threshold")

    def __init__(
        self,
        classifier: SuccessClassifier,
        mode: RewardMode = "prob",
        threshold: float = 0.5,
        *,
        reward_key: NestedKey = "reward",
        success_key: NestedKey = "success",
    ) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold is a probability in (0, 1), got {threshold}")
        self.classifier = classifier
        self.mode = mode
        self.threshold = threshold
        self._logit_threshold = math.log(threshold / (1.0 - threshold))
        self.in_keys = list(classifier.in_keys)
        self.out_keys = [reward_key, success_key]
        self.reward_key, self.success_key = reward_key, success_key

    def reward_from_logit(self, logit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reward float32 [*B, 1], success bool [*B, 1])`` from a logit ``[*B, 1]``."""
        success = logit >= self._logit_threshold
        if self.mode == "prob":
            reward = torch.sigmoid(logit)
        elif self.mode == "log_prob":
            reward = nn.functional.logsigmoid(logit)
        else:
            reward = success.to(torch.float32)
        return reward.to(torch.float32), success

    @torch.no_grad()
    def reward_and_success(self, td: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        unbatched = td.batch_dims == 0  # a single env step: encoders expect a batch dim
        was_training = self.classifier.training
        self.classifier.eval()
        try:
            logit = self.classifier.logits_from_features(self.classifier.features(td.unsqueeze(0) if unbatched else td))
        finally:
            self.classifier.train(was_training)
        return self.reward_from_logit(logit[0] if unbatched else logit)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        reward, success = self.reward_and_success(tensordict)
        tensordict.set(self.reward_key, reward)
        tensordict.set(self.success_key, success)
        return tensordict


_ACTIVATIONS = {"ReLU": nn.ReLU, "LeakyReLU": nn.LeakyReLU}  # the ones SERL's classifiers use


def make_pixel_classifier(
    camera_keys: Sequence[str] = ("front", "wrist"),
    image_size: int = 128,
    *,
    trunk: str = "resnet10",
    pretrained_path: str | Path | None = None,
    trust_pickle: bool = False,
    bottleneck_dim: int = 256,
    hidden_dims: Sequence[int] = (256,),
    dropout: float = 0.1,
    activation: type[nn.Module] = nn.ReLU,
) -> SuccessClassifier:
    """SERL's pixel success classifier on images only (no proprioception).

    ``trunk="resnet10"`` (or ``"mobilenet"``): frozen trunk (weights from the local
    ``pretrained_path`` when given; SERL loads ImageNet weights, without them the frozen features
    are random), learned spatial embeddings (8) and ``Linear(bottleneck_dim) -> LayerNorm -> tanh``
    per camera, then the MLP head. ``trunk="small"``: SERL's small conv trunk with average pooling,
    trained with the head. SERL uses ``bottleneck_dim=256`` and ReLU for the reward classifier,
    512 and LeakyReLU for VICE. The encoder is :func:`~torchrl_serl.modules.pixel_encoder.make_pixel_encoder`'s.
    """
    if activation not in _ACTIVATIONS.values():
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    encoder = make_pixel_encoder(
        camera_keys, image_size, encoder=trunk, pretrained_path=pretrained_path, trust_pickle=trust_pickle,
        bottleneck_dim=bottleneck_dim, proprio_key=None,
    )
    classifier = SuccessClassifier(encoder, hidden_dims=hidden_dims, dropout=dropout, activation=activation)
    # what save() writes beside the weights (the frozen trunk's weights are among them)
    classifier.architecture = {
        "camera_keys": list(camera_keys), "image_size": int(image_size), "trunk": trunk,
        "bottleneck_dim": int(bottleneck_dim), "hidden_dims": [int(h) for h in hidden_dims], "dropout": float(dropout),
        "activation": activation.__name__,
    }
    return classifier


def load_pixel_classifier(path: str | Path) -> SuccessClassifier:
    """The :func:`make_pixel_classifier` classifier saved at ``path`` (``recipes/train_reward_classifier.py``'s
    output), rebuilt from the architecture saved with it, in eval mode."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"no reward classifier at {path}") from None
    except Exception as err:
        raise ValueError(f"{path} is not a saved classifier: {err}") from err
    arch = blob.get("architecture") if isinstance(blob, dict) else None
    if not isinstance(arch, dict):
        raise ValueError(f"{path} does not say how its classifier was built (saved by an older version, or not by "
                         "make_pixel_classifier): rebuild it with make_pixel_classifier(...) and .load() it")
    arch = dict(arch, activation=_ACTIVATIONS[arch["activation"]])
    return make_pixel_classifier(**arch).load(path).eval()
