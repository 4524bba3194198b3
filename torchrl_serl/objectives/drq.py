"""DrQ: image SAC with a shared encoder trained by the critic, random-shift augmentation in the loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey

from torchrl_serl.modules.augmentation import random_shift
from torchrl_serl.modules.encoders.cached_features import feature_key, select_views, stack_channel_major
from torchrl_serl.modules.encoders.multi_camera import MultiCameraEncoder
from torchrl_serl.objectives.sac import SERLSACLoss, non_finite_entries

# Latent-batch entry the actor reads: the online embedding, always detached (SERL stops the
# actor's gradient into the shared encoder).
_ACTOR_EMBEDDING = "_actor_embedding"


class DrQLoss(SERLSACLoss):
    r"""DrQ as SERL runs it (``serl_launcher/agents/continuous/drq.py``), built on :class:`SERLSACLoss`.

    One :class:`~torchrl_serl.modules.encoders.MultiCameraEncoder` is shared by actor and critic:

    * images of ``observation`` and ``next`` are randomly shifted (``pad`` px edge padding,
      independent per sample, per camera, and between obs and next obs), unless ``augment=False``
      (augmented upstream, e.g. by :class:`~torchrl_serl.envs.transforms.RandomShift`);
    * the trunk runs **once per augmented image**: obs and next-obs images of every camera go
      through a frozen trunk in a single ``no_grad`` call, and the features are reused by the
      critic, the target critic and the actor (SERL re-runs the trunk in every network call);
    * critic: ``Q(enc(s), a)`` with gradients into the encoder heads (and a trainable trunk);
      target: ``min_{j in S} Q_target_j(enc_target(s'), a')`` with ``a' ~ pi(enc(s'))`` (online
      encoder for the policy, target encoder for the target critic, as SERL);
    * actor and temperature: the embedding is detached, so ``loss_actor`` never reaches the encoder.

    The SAC math (subset-min target, ensemble-sum critic loss, mean-over-ensemble actor loss,
    Lagrange temperature) is :class:`SERLSACLoss`'s, applied to the embeddings. Targets of the
    critic *and* the encoder are updated by one :class:`~torchrl.objectives.SoftUpdate`.

    SERL's pixel schedule (critic:actor ratio 4): three :meth:`loss_critic` updates then one
    :meth:`forward` (critic + actor + temperature on the same augmented batch).

    **Cached features** (``cached_features=True``, frozen trunk only; an option, not SERL's exact
    algorithm): the batch carries each camera's trunk features of ``K`` views per frame
    (``<camera>_features`` ``[B, K, C, h, w]``, written once per frame by
    :class:`~torchrl_serl.envs.transforms.TrunkFeatures`) instead of images. The loss draws one
    view per sample, independently for obs and next obs, in place of a fresh random shift, and
    runs only the trainable head: no trunk call in the learner.

    Args:
        actor_network: probabilistic actor reading ``embedding`` (see
            :func:`~torchrl_serl.modules.drq_networks.make_drq_networks`).
        qvalue_network: critic reading ``(embedding, action)``: one ``Q`` writing
            ``state_action_value`` ``[B, 1]`` (e.g. a stock :class:`~torchrl.modules.ValueOperator`,
            copied into ``num_critics`` critics) or an ensemble writing ``[B, N, 1]``, as
            :class:`SERLSACLoss` takes.
        encoder: the shared ``MultiCameraEncoder``.

    Keyword Args:
        augment: random-shift images inside the loss (default ``True``).
        pad: shift range in px (SERL: 4).
        generator: optional ``torch.Generator`` for the shifts (eager mode).
        cached_features: read cached trunk features of ``K`` views instead of images (see above).
        **sac_kwargs: :class:`SERLSACLoss` options (``critic_subset``, ``alpha_init``, ...).

    Input keys (``set_keys``): ``image_keys`` (tuple, default the encoder's ``camera_keys``; uint8
    ``[B, 3, H, W]``), ``observation`` (state ``[B, D]``), their ``("next", ...)`` versions,
    ``action`` ``[B, A]``, ``("next", "reward" | "done" | "terminated")`` ``[B, 1]``.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.objectives import SoftUpdate
        >>> from torchrl_serl.modules.drq_networks import make_drq_networks
        >>> actor, qvalue, encoder = make_drq_networks(
        ...     camera_keys=("front",), image_size=32, encoder="small", num_critics=4, hidden=(32,))
        >>> loss = DrQLoss(actor, qvalue, encoder)
        >>> loss.make_value_estimator(gamma=0.96)
        >>> updater = SoftUpdate(loss, tau=0.005)
        >>> b = 4
        >>> step = lambda: {"front": torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8),
        ...                 "observation": torch.randn(b, 7)}
        >>> data = TensorDict(**step(), action=torch.rand(b, 4) * 2 - 1,
        ...     next=TensorDict(**step(), reward=torch.randn(b, 1), done=torch.zeros(b, 1, dtype=torch.bool),
        ...                     terminated=torch.zeros(b, 1, dtype=torch.bool)),
        ...     batch_size=[b])
        >>> loss.loss_critic(data)["loss_qvalue"].backward()  # critic (and encoder) only
        >>> out = loss(data)  # critic, actor and temperature from one augmented encoding
        >>> sorted(k for k in out.keys() if k.startswith("loss_"))
        ['loss_actor', 'loss_alpha', 'loss_qvalue']
    """

    @dataclass
    class _AcceptedKeys(SERLSACLoss._AcceptedKeys):
        """Keys read by the loss; the SAC keys plus the pixel-observation keys.

        Attributes:
            observation: low-dimensional state ``[B, D]`` fed to the encoder.
            image_keys: tuple of camera keys, in the encoder's ``camera_keys`` order.
            embedding: key the actor and critic read (the encoder's ``out_key``).
        """

        observation: NestedKey = "observation"
        image_keys: tuple = ("front", "wrist")
        embedding: NestedKey = "embedding"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    encoder: MultiCameraEncoder
    encoder_params: TensorDictParams
    target_encoder_params: TensorDictParams

    def __init__(
        self,
        actor_network: TensorDictModule,
        qvalue_network: TensorDictModule,
        encoder: MultiCameraEncoder,
        *,
        augment: bool = True,
        pad: int = 4,
        generator: torch.Generator | None = None,
        cached_features: bool = False,
        **sac_kwargs,
    ) -> None:
        if not isinstance(encoder, MultiCameraEncoder):
            raise TypeError(f"encoder must be a MultiCameraEncoder, got {type(encoder).__name__}")
        if cached_features and not encoder.freeze_trunk:
            raise ValueError("cached_features=True needs a frozen trunk: a trained trunk changes its features")
        if list(actor_network.in_keys) != [encoder.out_key]:
            raise ValueError(
                f"the actor must read only the encoder's {encoder.out_key!r}, its in_keys are {actor_network.in_keys}"
            )
        if not 0 <= pad < encoder.image_size // 2:
            raise ValueError(f"pad must be in [0, {encoder.image_size // 2}) px, got {pad}")
        super().__init__(actor_network, qvalue_network, **sac_kwargs)
        obs_keys = self._obs_keys(self.qvalue_network)
        if obs_keys != [encoder.out_key]:
            raise ValueError(
                f"the critic must read ({encoder.out_key!r}, action), its observation keys are {obs_keys}"
            )
        self.convert_to_functional(encoder, "encoder", create_target_params=True)
        if encoder.freeze_trunk:
            # A frozen trunk is constant: no functional copy, no target copy for SoftUpdate to
            # average, no parameters to swap in on every call. The module keeps its own weights.
            self.encoder_params = TensorDictParams(self.encoder_params.exclude("trunks"), no_convert=True)
            self.target_encoder_params = TensorDictParams(
                self.target_encoder_params.exclude("trunks"), no_convert=True
            )
        self.augment = augment
        self.pad = pad
        self.generator = generator
        self.cached_features = cached_features
        self.uses_state = encoder.proprio_key is not None
        image_keys = tuple(feature_key(k) for k in encoder.camera_keys) if cached_features else encoder.camera_keys
        self.set_keys(image_keys=tuple(image_keys), embedding=encoder.out_key)
        if self.uses_state:
            self.set_keys(observation=encoder.proprio_key)

    def _set_in_keys(self):
        keys = self.tensor_keys
        # SACLoss.__init__ calls this before uses_state exists; set_keys recomputes it afterwards.
        obs = [*keys.image_keys, *([keys.observation] if getattr(self, "uses_state", True) else [])]
        self._in_keys = [*obs, *[("next", k) for k in obs], keys.action, *[
            ("next", k) for k in (keys.reward, keys.done, keys.terminated)
        ]]

    def set_keys(self, **kwargs) -> None:
        if "image_keys" in kwargs:
            image_keys = tuple(kwargs["image_keys"])
            if len(image_keys) != len(self.encoder.camera_keys):
                raise ValueError(
                    f"image_keys {image_keys} must name one key per encoder camera {self.encoder.camera_keys}"
                )
            kwargs["image_keys"] = image_keys
        super().set_keys(**kwargs)
        self._in_keys = None

    @property
    def frozen_trunk(self) -> bool:
        return self.encoder.freeze_trunk

    def check_batch(self, tensordict: TensorDictBase, with_next: bool = True) -> None:
        """Raise a clear error for a batch this loss cannot train on: missing keys, images that
        are not uint8 ``[B, 3, H, W]``, reward/done not ``[B, 1]``, NaN/inf values (one device
        sync). ``with_next=False`` checks only what the actor loss reads."""
        keys = self.tensor_keys
        needed = self.in_keys if with_next else [*keys.image_keys, *([keys.observation] if self.uses_state else [])]
        missing = [k for k in needed if k not in tensordict.keys(True)]
        if missing:
            raise KeyError(f"DrQLoss: batch is missing keys {missing} (needs {sorted(map(str, needed))})")
        if tensordict.ndim != 1:
            raise ValueError(f"DrQLoss expects a flat batch [B], got batch_size {tuple(tensordict.batch_size)}")
        b, size = tensordict.shape[0], self.encoder.image_size
        prefixes = [()] + ([("next",)] if with_next else [])
        feature_shape = self.encoder.trunk(self.encoder.camera_keys[0]).output_shape(size) if self.cached_features else None
        for prefix in prefixes:
            for k in keys.image_keys:
                key = (*prefix, *((k,) if isinstance(k, str) else k))
                img = tensordict.get(key)
                if self.cached_features:
                    if img.ndim != 5 or img.shape[0] != b or tuple(img.shape[2:]) != tuple(feature_shape) \
                            or not img.is_floating_point():
                        raise ValueError(
                            f"cached features {key} must be floating [B, K, C, h, w] = "
                            f"[{b}, K, {', '.join(map(str, feature_shape))}], "
                            f"got {img.dtype} {tuple(img.shape)}"
                        )
                    continue
                if img.shape != (b, 3, size, size) or img.dtype != torch.uint8:
                    raise ValueError(
                        f"image {key} must be uint8 [B, 3, {size}, {size}] = [{b}, 3, {size}, {size}], "
                        f"got {img.dtype} {tuple(img.shape)}"
                    )
        if with_next:
            for key in (("next", keys.reward), ("next", keys.done), ("next", keys.terminated)):
                shape = tuple(tensordict.get(key).shape)
                if shape != (b, 1):
                    raise ValueError(f"{key} must have shape [B, 1] = {(b, 1)}, got {shape}")
        bad = non_finite_entries(tensordict, needed)
        if bad:
            raise ValueError(f"DrQLoss: non-finite values (NaN/inf) in batch entries {bad}")

    def _images(self, tensordict: TensorDictBase, with_next: bool) -> TensorDict:
        """Camera images keyed like the encoder, ``[B, ...]`` or ``[2, B, ...]`` (obs, next), augmented.
        With cached features: one drawn view of each frame's features instead."""
        images = {}
        for cam, key in zip(self.encoder.camera_keys, self.tensor_keys.image_keys):
            x = tensordict.get(key)
            if self.cached_features:
                # the drawn views as stored (float16), then float32 channel-major in one copy each:
                # the layout each head call's spatial embeddings read without copying (same values)
                x = [select_views(x, self.generator)]
                if with_next:
                    x.append(select_views(tensordict.get(("next", key)), self.generator))
                stacked = stack_channel_major(x)
                images[cam] = stacked if with_next else stacked[0]
                continue
            if with_next:
                x = torch.stack([x, tensordict.get(("next", key))])
            if self.augment:
                # One gather per camera shifts obs and next obs of every sample independently.
                x = random_shift(x, self.pad, self.generator)
            images[cam] = x
        batch = images[self.encoder.camera_keys[0]].shape[:-3]
        return TensorDict(images, batch_size=batch, device=tensordict.device)

    def _embed(self, params: TensorDictParams, features: TensorDictBase, state: torch.Tensor) -> torch.Tensor:
        with params.to_module(self.encoder, preserve_module_state=False):
            return self.encoder.forward_features(features, state)

    def _encode_trunk(self, params: TensorDictParams, images: TensorDictBase) -> TensorDict:
        with params.to_module(self.encoder, preserve_module_state=False):
            return self.encoder.encode_images(images)

    def _loss_inputs(
        self, tensordict: TensorDictBase, with_next: bool = True
    ) -> tuple[TensorDictBase | None, TensorDictBase]:
        """Embedding batches for :class:`SERLSACLoss`: ``(critic_td, actor_td)``.

        ``critic_td``: ``embedding`` with gradients into the encoder, ``("next", embedding)`` from
        the target encoder, the actor's detached online embeddings, action, reward, done flags.
        ``actor_td``: the same obs embedding, detached. ``critic_td`` is ``None`` without next obs.
        """
        keys = self.tensor_keys
        emb_key = keys.embedding
        images = self._images(tensordict, with_next)
        state = tensordict.get(keys.observation) if self.uses_state else None
        if self.cached_features:
            feats = images  # the trunk ran once per frame, when the frame was collected
            feats_obs, feats_next, feats_next_target = (feats[0], feats[1], feats[1]) if with_next else (feats,) * 3
        elif with_next and self.frozen_trunk:
            feats = self._encode_trunk(self.encoder_params, images)  # [2, B]: obs and next, one call
            feats_obs, feats_next, feats_next_target = feats[0], feats[1], feats[1]
        elif with_next:
            # A trained trunk has a target copy: next obs needs online (policy) and target features.
            feats_obs = self._encode_trunk(self.encoder_params, images[0])
            with torch.no_grad():
                feats_next = self._encode_trunk(self.encoder_params, images[1])
                feats_next_target = self._encode_trunk(self.target_encoder_params, images[1])
        else:
            feats_obs = self._encode_trunk(self.encoder_params, images)
        emb = self._embed(self.encoder_params, feats_obs, state)
        base = tensordict.select(
            keys.action,
            ("next", keys.reward),
            ("next", keys.done),
            ("next", keys.terminated),
            keys.priority_weight,
            strict=False,
        )
        actor_td = base.clone(False)
        actor_td.set(emb_key, emb.detach())
        actor_td.set(_ACTOR_EMBEDDING, emb.detach())
        if not with_next:
            return None, actor_td
        next_state = tensordict.get(("next", keys.observation)) if self.uses_state else None
        with torch.no_grad():
            next_emb = self._embed(self.encoder_params, feats_next, next_state)
            next_emb_target = self._embed(self.target_encoder_params, feats_next_target, next_state)
        critic_td = base
        critic_td.set(emb_key, emb)
        critic_td.set(_ACTOR_EMBEDDING, emb.detach())
        critic_td.set(("next", emb_key), next_emb_target)
        critic_td.set(("next", _ACTOR_EMBEDDING), next_emb)
        return critic_td, actor_td

    def _actor_dist(self, tensordict: TensorDictBase):
        # The actor always sees the detached online embedding, also at s' in the critic target.
        actor_in = TensorDict(
            {self.tensor_keys.embedding: tensordict.get(_ACTOR_EMBEDDING)}, batch_size=tensordict.batch_size
        )
        return super()._actor_dist(actor_in)
