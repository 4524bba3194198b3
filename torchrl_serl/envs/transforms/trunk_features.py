"""Run a frozen image trunk once per frame, on the actor side, and emit ``K`` cached views."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.data import Composite, Unbounded
from torchrl.envs.transforms import Transform

from torchrl_serl.data.pixel_storage import next_is_following_frame
from torchrl_serl.modules.encoders.cached_features import encode_views, feature_key


class TrunkFeatures(Transform):
    """Add ``<camera>_features`` ``[K, C, h, w]`` (float16) to every observation of an image env.

    Each camera frame goes through the frozen ``trunk`` once, as ``K`` views (view 0 unshifted for
    acting, views ``1..K-1`` randomly shifted by up to ``pad`` px for the learner). Every camera's
    views go through the trunk in one call. The images stay in the observation (videos, the
    exact DrQ path); a buffer that stores only the features drops them.

    Args:
        trunk: frozen trunk, uint8 ``[N, 3, H, W] -> [N, C, h, w]``, with ``output_shape(image_size)``.
        camera_keys: image keys, uint8 ``[3, H, W]``.
        image_size: ``H = W`` in px.
        num_views: ``K >= 1``.
        pad: shift range in px (SERL: 4).
        seed: seed of the shift generator.
        compile_trunk: run the env steps' trunk calls under ``torch.compile`` (Inductor), compiled
            at the first call in the process that steps the env (an actor process compiles its
            own: a compiled module is not pickled), i.e. at the first reset, while an arm stands
            still. Same math; on a CPU its gain is in bf16 convolutions (``trunk_bf16``).
            ``encode_transitions`` (bulk, varying batch sizes) stays eager.
    """

    def __init__(
        self,
        trunk: nn.Module,
        camera_keys: Sequence[str] = ("front", "wrist"),
        image_size: int = 128,
        num_views: int = 2,
        pad: int = 4,
        seed: int = 0,
        compile_trunk: bool = False,
    ):
        camera_keys = list(camera_keys)
        super().__init__(in_keys=camera_keys, out_keys=[feature_key(k) for k in camera_keys])
        if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f"num_views must be an int >= 1, got {num_views!r}")
        for p in trunk.parameters():
            p.requires_grad_(False)
        self.trunk = trunk.eval()
        self.image_size = image_size
        self.num_views = num_views
        self.pad = pad
        self.generator = torch.Generator().manual_seed(seed)
        self.feature_shape = (num_views, *trunk.output_shape(image_size))
        self.compile_trunk = compile_trunk
        self._compiled_trunk = None  # built where the env steps; kept out of __dict__'s pickle

    def __getstate__(self):
        state = super().__getstate__()
        state["_compiled_trunk"] = None
        return state

    def _stepping_trunk(self):
        """The trunk for env steps: compiled once per process with ``compile_trunk``."""
        if not self.compile_trunk:
            return self.trunk
        if self._compiled_trunk is None:
            # a plain attribute (not a submodule): the compiled wrapper shares the trunk's parameters
            self.__dict__["_compiled_trunk"] = torch.compile(self.trunk, dynamic=False)
        return self._compiled_trunk

    def train(self, mode: bool = True):
        super().train(mode)
        self.trunk.eval()  # frozen: never updates normalisation statistics
        return self

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        images = []
        for key in self.in_keys:
            img = next_tensordict.get(key, None)
            if img is None:
                raise KeyError(f"TrunkFeatures: camera {key!r} not in {sorted(map(str, next_tensordict.keys(True)))}")
            images.append(img)
        stacked = torch.stack(images)  # [cams, *B, 3, H, W]: one trunk call for all cameras
        feats = encode_views(self._stepping_trunk(), stacked, self.num_views, self.pad, self.generator)
        for key, f in zip(self.out_keys, feats.unbind(0)):
            next_tensordict.set(key, f)
        return next_tensordict

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        return self._call(tensordict_reset)

    def encode_transitions(self, data: TensorDictBase, chunk: int = 8) -> TensorDictBase:
        """Add the cached features to stored transitions ``[T]`` (e.g. demos), in place.

        Each frame is encoded once: ``("next", cam)`` reuses row ``t + 1``'s features where its
        frame is that row's frame (so a frame-dedup buffer still stores it once). ``chunk`` frames
        go through the trunk per call (:func:`encode_views`).
        """
        if data.ndim != 1:
            raise ValueError(f"encode_transitions takes transitions [T], got batch size {tuple(data.batch_size)}")
        for key, out_key in zip(self.in_keys, self.out_keys):
            frames, next_frames = data.get(key), data.get(("next", key))
            feats = encode_views(self.trunk, frames, self.num_views, self.pad, self.generator, chunk=chunk)
            next_feats = torch.empty_like(feats)
            same = next_is_following_frame(frames, next_frames)
            next_feats[:-1][same[:-1]] = feats[1:][same[:-1]]
            other = (~same).nonzero().squeeze(-1)
            if other.numel():
                next_feats[other] = encode_views(self.trunk, next_frames[other], self.num_views, self.pad,
                                                 self.generator, chunk=chunk)
            data.set(out_key, feats)
            data.set(("next", out_key), next_feats)
        return data

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        for in_key, out_key in zip(self.in_keys, self.out_keys):
            spec = observation_spec[in_key]
            observation_spec[out_key] = Unbounded(
                (*spec.shape[:-3], *self.feature_shape), device=spec.device, dtype=torch.float16
            )
        return observation_spec

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cameras={self.in_keys}, num_views={self.num_views}, pad={self.pad})"
