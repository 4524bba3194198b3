"""Multi-camera + proprioception encoder, split so a frozen trunk runs once per augmented image."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from tensordict import NestedKey, TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from torchrl_serl.modules.encoders.pooling import make_pooling


class MultiCameraEncoder(TensorDictModuleBase):
    """Per-camera trunk -> pooling -> ``Linear -> LayerNorm -> tanh``, concatenated with proprioception.

    SERL's ``EncodingWrapper`` + ``PreTrainedResNetEncoder``. Work is split in two steps
    (see ``docs/conventions.md``) so a loss can run the expensive trunk once per augmented image
    and reuse the features for critic, target and actor:

    - :meth:`encode_images` ``(td) -> TensorDict`` of trunk features ``[*B, C, h, w]`` per camera
      (under ``no_grad`` when the trunk is frozen; cameras sharing one trunk go through it in one call),
    - :meth:`forward_features` ``(features, observation) -> [*B, E]`` pooling + projection + state,
    - ``encoder(td)`` does both and writes ``out_key`` (``"embedding"``).

    ``E = len(camera_keys) * bottleneck_dim + (proprio_latent_dim or proprio_dim)``.

    Args:
        trunk: one ``nn.Module`` shared by every camera, or a mapping camera key -> trunk.
            A trunk maps ``[N, 3, H, W]`` uint8 to ``[N, C, h, w]`` and has ``output_shape(image_size)``.
        camera_keys: image keys, uint8 ``[*B, 3, H, W]`` (SERL: ``("front", "wrist")``).
        image_size: expected square image side ``H = W`` in pixels.
        pooling: ``"spatial_learned_embeddings"`` (SERL), ``"spatial_softmax"`` or ``"avg"``.
        pooling_kwargs: extra pooling arguments; default ``num_features=8`` for learned embeddings.
        bottleneck_dim: per-camera projection width (SERL: 256); ``None`` keeps the pooled vector.
        proprio_key: low-dimensional state key (``"observation"``, ``[*B, proprio_dim]``); ``None`` for images only.
        proprio_dim: size of the state vector (7 for the pixel tasks).
        proprio_latent_dim: if set, the state goes through ``Linear -> LayerNorm -> tanh`` of this
            width (SERL's ``proprio_latent_dim``); ``None`` concatenates it raw (SERL's default).
        freeze_trunk: no gradients into the trunk and trunk kept in eval mode (SERL's frozen ResNet-10).
        dropout: dropout after pooling (SERL uses 0.1 after learned embeddings in training).
        out_key: where ``forward`` writes the embedding.
    """

    def __init__(
        self,
        trunk: nn.Module | Mapping[str, nn.Module],
        camera_keys: Sequence[str] = ("front", "wrist"),
        image_size: int = 128,
        pooling: str = "spatial_learned_embeddings",
        pooling_kwargs: dict | None = None,
        bottleneck_dim: int | None = 256,
        proprio_key: NestedKey | None = "observation",
        proprio_dim: int = 7,
        proprio_latent_dim: int | None = None,
        freeze_trunk: bool = True,
        dropout: float = 0.0,
        out_key: NestedKey = "embedding",
    ):
        super().__init__()
        camera_keys = tuple(camera_keys)
        if not camera_keys or len(set(camera_keys)) != len(camera_keys):
            raise ValueError(f"camera_keys must be non-empty and unique, got {camera_keys}")
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 px, got {image_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if isinstance(trunk, Mapping):
            if set(trunk) != set(camera_keys):
                raise ValueError(f"trunk mapping keys {sorted(trunk)} must equal camera_keys {sorted(camera_keys)}")
            trunks = {k: trunk[k] for k in camera_keys}
            if len({id(m) for m in trunks.values()}) != len(trunks):
                raise ValueError("pass one module (not a mapping) to share a trunk between cameras")
            self.shared_trunk = False
        else:
            # Registered once: a module under several names would be swapped in several times by
            # functional calls (TensorDict.to_module) and copied several times into target params.
            trunks = {"shared": trunk}
            self.shared_trunk = True
        self.trunks = nn.ModuleDict(trunks)
        self.camera_keys = camera_keys
        self.image_size = image_size
        self.freeze_trunk = freeze_trunk
        if pooling == "spatial_learned_embeddings" and pooling_kwargs is None:
            pooling_kwargs = {"num_features": 8}
        heads = {}
        for k in camera_keys:
            c, h, w = self.trunk(k).output_shape(image_size)
            pool = make_pooling(pooling, c, h, w, **(pooling_kwargs or {}))
            layers = [pool]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            if bottleneck_dim is not None:
                layers += [nn.Linear(pool.out_features, bottleneck_dim), nn.LayerNorm(bottleneck_dim), nn.Tanh()]
            heads[k] = nn.Sequential(*layers)
        self.heads = nn.ModuleDict(heads)
        per_camera = bottleneck_dim if bottleneck_dim is not None else heads[camera_keys[0]][0].out_features
        self.proprio_key = proprio_key
        self.proprio_dim = proprio_dim if proprio_key is not None else 0
        if proprio_key is not None and proprio_latent_dim is not None:
            self.proprio_proj = nn.Sequential(
                nn.Linear(proprio_dim, proprio_latent_dim), nn.LayerNorm(proprio_latent_dim), nn.Tanh()
            )
            proprio_out = proprio_latent_dim
        else:
            self.proprio_proj = None
            proprio_out = self.proprio_dim
        self.out_features = len(camera_keys) * per_camera + proprio_out
        self.in_keys = list(camera_keys) + ([proprio_key] if proprio_key is not None else [])
        self.out_keys = [out_key]
        self.out_key = out_key
        if freeze_trunk:
            for p in self.trunk_parameters():
                p.requires_grad_(False)
            self.trunks.eval()

    def trunk(self, camera_key: str) -> nn.Module:
        """The trunk that encodes ``camera_key``."""
        return self.trunks["shared" if self.shared_trunk else camera_key]

    def trunk_parameters(self) -> list[nn.Parameter]:
        """Trunk parameters (a shared trunk counted once)."""
        return list(self.trunks.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        """Everything but the trunk: poolings, projections, state projection (what DrQ trains when frozen)."""
        trunk_ids = {id(p) for p in self.trunks.parameters()}
        return [p for p in self.parameters() if id(p) not in trunk_ids]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_trunk:
            # A frozen trunk never updates normalisation statistics (MobileNet has BatchNorm).
            self.trunks.eval()
        return self

    def _check_images(self, key: str, images: torch.Tensor) -> None:
        if images.ndim < 3 or images.shape[-3] != 3 or images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"camera {key!r} must be [*B, 3, {self.image_size}, {self.image_size}] (channels first), "
                f"got shape {tuple(images.shape)}"
            )
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise TypeError(f"camera {key!r} must be uint8 (or float in [0, 1]), got dtype {images.dtype}")

    def encode_images(self, td: TensorDictBase) -> TensorDict:
        """Trunk features of every camera: ``{key: [*B, C, h, w]}`` (no grad when the trunk is frozen)."""
        images = {}
        for k in self.camera_keys:
            img = td.get(k, None)
            if img is None:
                raise KeyError(f"MultiCameraEncoder needs image key {k!r}; tensordict has {list(td.keys(True))}")
            self._check_images(k, img)
            images[k] = img
        batch = images[self.camera_keys[0]].shape[:-3]
        for k, img in images.items():
            if img.shape[:-3] != batch:
                raise ValueError(f"cameras must share batch dims: {k!r} has {tuple(img.shape[:-3])}, expected {tuple(batch)}")
        ctx = torch.no_grad() if self.freeze_trunk else contextlib.nullcontext()
        with ctx:
            if self.shared_trunk and len(images) > 1:
                # One trunk call for all cameras: bigger batches keep the convolutions efficient.
                stacked = torch.stack([images[k] for k in self.camera_keys])
                feats = self.trunks["shared"](stacked.reshape(-1, *stacked.shape[-3:]))
                feats = feats.reshape(len(images), *batch, *feats.shape[1:]).unbind(0)
                out = dict(zip(self.camera_keys, feats))
            else:
                out = {}
                for k, img in images.items():
                    f = self.trunk(k)(img.reshape(-1, *img.shape[-3:]))
                    out[k] = f.reshape(*batch, *f.shape[1:])
        return TensorDict(out, batch_size=batch, device=images[self.camera_keys[0]].device)

    def forward_features(self, features: TensorDictBase, observation: torch.Tensor | None = None) -> torch.Tensor:
        """Poolings + projections of trunk ``features`` and the state: ``[*B, E]``."""
        outs = []
        batch = None
        for k in self.camera_keys:
            f = features.get(k)
            batch = f.shape[:-3]
            outs.append(self.heads[k](f.reshape(-1, *f.shape[-3:])).reshape(*batch, -1))
        if self.proprio_key is not None:
            if observation is None:
                raise ValueError(f"MultiCameraEncoder needs the state {self.proprio_key!r} ([*B, {self.proprio_dim}])")
            if observation.shape != (*batch, self.proprio_dim):
                raise ValueError(
                    f"state {self.proprio_key!r} must be [*B, {self.proprio_dim}] with B={tuple(batch)}, "
                    f"got shape {tuple(observation.shape)}"
                )
            obs = observation.to(outs[0].dtype)
            outs.append(self.proprio_proj(obs) if self.proprio_proj is not None else obs)
        return torch.cat(outs, -1)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        features = self.encode_images(tensordict)
        obs = tensordict.get(self.proprio_key) if self.proprio_key is not None else None
        tensordict.set(self.out_key, self.forward_features(features, obs))
        return tensordict

    def load_pretrained(self, path: str | Path, *, trust_pickle: bool = False) -> None:
        """Load trunk weights from a local file into every trunk (nothing is downloaded).

        ``*.pkl``/``*.pickle``: SERL's published Flax ResNet-10 params (``resnet10_params.pkl``),
        converted by :func:`~torchrl_serl.modules.encoders.flax_convert.load_serl_resnet10_params`.
        Unpickling runs code, so these are refused (``PermissionError``) unless ``trust_pickle=True``.
        Anything else: a ``torch.save``-d trunk ``state_dict``, read with ``weights_only=True``.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"pretrained trunk file not found: {path} (nothing is downloaded)")
        if path.suffix in (".pkl", ".pickle"):
            from torchrl_serl.modules.encoders.flax_convert import load_serl_resnet10_params

            if trust_pickle:
                warnings.warn(f"unpickling {path} (trust_pickle=True): this runs any code the file holds; "
                              "load only files you trust", stacklevel=2)
            state = load_serl_resnet10_params(path, trust_pickle=trust_pickle)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        for trunk in self.trunks.values():
            trunk.load_state_dict(state)
