"""Success-classifier losses: plain BCE (SERL's reward classifier) and VICE (mixup, smoothing, gradient penalty)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.objectives.common import LossModule

from torchrl_serl.modules.augmentation import random_shift
from torchrl_serl.modules.classifier import SuccessClassifier


def label_batch(positives: TensorDictBase, negatives: TensorDictBase, label_key: NestedKey = "label") -> TensorDict:
    """Concatenate goal examples (label 1) and other observations (label 0) into one ``[P + N]`` batch.

    Only the keys both inputs share are kept, so a replay ``batch["next"]`` can be paired with goal
    images that lack reward/done entries. ``label`` is float32 ``[P + N, 1]``.
    """
    if positives.batch_dims != 1 or negatives.batch_dims != 1:
        raise ValueError(
            f"label_batch expects 1-D batches, got {tuple(positives.batch_size)} and {tuple(negatives.batch_size)}"
        )
    keys = set(positives.keys(True, True)) & set(negatives.keys(True, True))
    if not keys:
        raise KeyError(f"positives {list(positives.keys())} and negatives {list(negatives.keys())} share no keys")
    batch = torch.cat([positives.select(*keys), negatives.select(*keys)], 0)
    labels = torch.cat([torch.ones(positives.shape[0], 1), torch.zeros(negatives.shape[0], 1)]).to(batch.device)
    batch.set(label_key, labels)
    return batch


def smooth_labels(labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """SERL's label smoothing toward 0.5: ``y (1 - eps) + 0.5 eps`` (eps 0.2: 1 -> 0.9, 0 -> 0.1)."""
    return labels * (1.0 - smoothing) + 0.5 * smoothing


def mixup(
    features: TensorDictBase, targets: torch.Tensor, lam: float | torch.Tensor, index: torch.Tensor
) -> tuple[TensorDictBase, torch.Tensor]:
    """Mixup of inputs AND labels: ``x' = lam x + (1 - lam) x[index]``, same for ``y``.

    Binary cross-entropy is linear in its target, so training on ``y'`` equals SERL's
    ``lam BCE(y) + (1 - lam) BCE(y[index])``.
    """
    mixed = features.apply(lambda x: lam * x + (1.0 - lam) * x[index])
    return mixed, lam * targets + (1.0 - lam) * targets[index]


class BinaryClassifierLoss(LossModule):
    """Binary cross-entropy for a :class:`SuccessClassifier`, with VICE's optional regularisers.

    The batch holds observations and a ``label`` (1: goal/success, 0: anything else; see
    :func:`label_batch`). With every regulariser off this is SERL's reward-classifier training:
    ``loss_classifier = BCE(logit(x), y)``. Options, in the order they are applied:

    - ``augment_pad > 0``: DrQ random shift of every camera by up to ``augment_pad`` px, in place
      (SERL's reward classifier) or, with ``keep_originals``, as extra copies that double the batch
      (SERL's VICE classifies the originals and their augmented copies);
    - ``label_smoothing`` eps: ``y <- y (1 - eps) + 0.5 eps``;
    - ``mixup_alpha`` a: one ``lam ~ Beta(a, a)`` per batch and a random permutation ``index``; the
      classifier's :meth:`~SuccessClassifier.features` (frozen trunk outputs) and the targets are
      both mixed (:func:`mixup`);
    - ``gp_weight`` w: ``loss_gradient_penalty = w * mean_i (||d logit / d f(x_i)||_2 - 1)^2`` at
      ``B / 2`` points ``x_i = e_i f(pos) + (1 - e_i) f(neg)``, ``e_i ~ U(0, 1)``, on lines between
      random goal and non-goal features (WGAN-GP). As in SERL the gradient is taken w.r.t. the
      trunk features and 1e-6 is added per element inside the norm; SERL interpolates the goal
      half and the policy half of its *mixed* batch, which relies on batch order, so the points
      here pair un-mixed features of each class instead. TorchRL's ``GAILLoss`` penalises
      raw (observation, action) pairs with element-wise noise, which does not fit image features,
      so the penalty is computed here.

    ``torch.compile`` works on this loss without the gradient penalty; with it, run eager (PyTorch's
    compiled autograd has no double backward, which the penalty's ``create_graph`` needs).

    Keys: the observations are the classifier's ``in_keys`` (set them on the classifier);
    ``label`` is set with ``set_keys(label=...)``.

    Returns ``loss_classifier`` (and ``loss_gradient_penalty`` when ``gp_weight > 0``), plus the
    detached diagnostics ``accuracy`` (un-mixed inputs, threshold 0.5), ``grad_norm`` and
    ``mixup_lambda``.

    Examples:
        >>> clf = SuccessClassifier(in_features=3, hidden_dims=(16,))
        >>> loss = VICELoss(clf)
        >>> batch = label_batch(TensorDict(observation=torch.ones(4, 3), batch_size=[4]),
        ...                     TensorDict(observation=torch.zeros(4, 3), batch_size=[4]))
        >>> out = loss(batch)
        >>> sum(v for k, v in out.items() if k.startswith("loss_")).backward()
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable keys.

        Attributes:
            label: float/bool ``[*B, 1]``, 1 for goal examples and 0 for the rest. Default ``"label"``.
        """

        label: NestedKey = "label"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        classifier: SuccessClassifier,
        *,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        gp_weight: float = 0.0,
        augment_pad: int = 0,
        keep_originals: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0 (0 disables mixup), got {mixup_alpha}")
        if gp_weight < 0:
            raise ValueError(f"gp_weight must be >= 0, got {gp_weight}")
        if augment_pad < 0:
            raise ValueError(f"augment_pad must be >= 0 px, got {augment_pad}")
        self.classifier = classifier
        self.label_smoothing = label_smoothing
        self.mixup_alpha = mixup_alpha
        self.gp_weight = gp_weight
        self.augment_pad = augment_pad
        self.keep_originals = keep_originals
        self._out_keys = None

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    @property
    def in_keys(self) -> list[NestedKey]:
        return [*self.classifier.in_keys, self.tensor_keys.label]

    @property
    def out_keys(self) -> list[str]:
        """Entries of :meth:`forward`'s output; :meth:`select_out_keys` keeps a subset."""
        if self._out_keys is not None:
            return self._out_keys
        keys = ["loss_classifier"]
        if self.gp_weight > 0:
            keys.append("loss_gradient_penalty")
        return [*keys, "accuracy", "grad_norm", "mixup_lambda"]

    @out_keys.setter
    def out_keys(self, values) -> None:
        self._out_keys = values

    def sample_mixup(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lam, index)`` for one mixup: ``lam ~ Beta(alpha, alpha)`` (scalar), ``index`` a permutation."""
        alpha = torch.tensor(self.mixup_alpha, device=device)
        lam = torch.distributions.Beta(alpha, alpha).sample()
        return lam, torch.randperm(batch_size, device=device)

    def _labels(self, tensordict: TensorDictBase) -> torch.Tensor:
        key = self.tensor_keys.label
        if key not in tensordict.keys(True):
            raise KeyError(f"{type(self).__name__} needs a {key!r} entry (1 goal, 0 other); see label_batch()")
        labels = tensordict.get(key)
        if labels.shape != (*tensordict.batch_size, 1):
            raise ValueError(f"{key!r} must have shape {(*tensordict.batch_size, 1)}, got {tuple(labels.shape)}")
        labels = labels.float()
        if not ((labels == 0) | (labels == 1)).all():
            raise ValueError(f"{key!r} must hold only 0 and 1, got values {labels.unique().tolist()}")
        if labels.all() or not labels.any():
            only = int(labels[0].item())
            raise ValueError(f"the batch needs both goal (1) and non-goal (0) examples, got only label {only}")
        return labels

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if tensordict.batch_dims != 1:
            tensordict = tensordict.reshape(-1)
        labels = self._labels(tensordict)
        obs = tensordict.select(*self.classifier.in_keys, strict=False)
        if self.augment_pad > 0 and self.classifier.image_keys:
            shifted = obs.clone(False)
            for key in self.classifier.image_keys:
                shifted.set(key, random_shift(obs.get(key), self.augment_pad))
            if self.keep_originals:
                obs = torch.cat([obs, shifted], 0)
                labels = torch.cat([labels, labels], 0)
            else:
                obs = shifted
        features = self.classifier.features(obs)
        targets = smooth_labels(labels, self.label_smoothing)

        lam = torch.ones((), device=labels.device)
        mixed = features
        if self.mixup_alpha > 0:
            lam, index = self.sample_mixup(labels.shape[0], labels.device)
            mixed, targets = mixup(features, targets, lam, index)
        logits = self.classifier.logits_from_features(mixed)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, targets)
        out = {"loss_classifier": loss}

        grad_norm = torch.zeros((), device=labels.device)
        if self.gp_weight > 0:
            penalty, grad_norm = self._gradient_penalty(features, labels)
            out["loss_gradient_penalty"] = self.gp_weight * penalty

        with torch.no_grad():
            clean = logits if self.mixup_alpha == 0 else self.classifier.logits_from_features(features)
            out["accuracy"] = ((clean > 0).float() == labels).float().mean()
        out["grad_norm"] = grad_norm.detach()
        out["mixup_lambda"] = torch.as_tensor(lam, dtype=torch.float32).detach()
        return TensorDict(out, batch_size=[])

    def _gradient_penalty(self, features: TensorDictBase, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos = features[labels[:, 0] > 0.5]
        neg = features[labels[:, 0] < 0.5]
        n = max(labels.shape[0] // 2, 1)
        pos = pos[torch.randint(pos.shape[0], (n,), device=labels.device)]
        neg = neg[torch.randint(neg.shape[0], (n,), device=labels.device)]
        eps = torch.rand(n, device=labels.device)

        def interpolate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            e = eps.reshape(n, *([1] * (a.ndim - 1)))
            point = e * a + (1.0 - e) * b
            # A frozen trunk's features carry no graph; the penalty still needs d logit / d point.
            return point if point.requires_grad else point.detach().requires_grad_(True)

        points = pos.apply(interpolate, neg)
        leaves = list(points.values(True, True))
        logits = self.classifier.logits_from_features(points)
        # Samples are independent (LayerNorm is per sample), so d(sum)/d point_i is per-sample.
        grads = torch.autograd.grad(logits.sum(), leaves, create_graph=True)
        flat = torch.cat([g.reshape(n, -1) for g in grads], dim=1)
        norms = torch.sqrt((flat.pow(2) + 1e-6).sum(dim=1))
        return (norms - 1.0).pow(2).mean(), norms.mean()


class VICELoss(BinaryClassifierLoss):
    """VICE classifier loss with SERL's defaults: label smoothing 0.2, mixup Beta(1, 1), gradient
    penalty weight 10, originals plus 4 px random-shift copies of every camera.

    Train it on goal images (label 1) against observations sampled from the replay buffer (label 0)
    between policy updates, and relabel the rewards of each sampled transition with
    :class:`~torchrl_serl.envs.transforms.learned_reward.LearnedReward` (SERL: thresholded at 0.5).
    See :class:`BinaryClassifierLoss` for the math and keys.
    """

    def __init__(
        self,
        classifier: SuccessClassifier,
        *,
        label_smoothing: float = 0.2,
        mixup_alpha: float = 1.0,
        gp_weight: float = 10.0,
        augment_pad: int = 4,
        keep_originals: bool = True,
    ) -> None:
        super().__init__(
            classifier,
            label_smoothing=label_smoothing,
            mixup_alpha=mixup_alpha,
            gp_weight=gp_weight,
            augment_pad=augment_pad,
            keep_originals=keep_originals,
        )
