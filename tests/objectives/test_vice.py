import pytest
import torch
from tensordict import TensorDict
from torch import nn

from torchrl_serl.modules.classifier import SuccessClassifier
from torchrl_serl.modules.encoders import MultiCameraEncoder, SmallConvEncoder
from torchrl_serl.objectives.vice import BinaryClassifierLoss, VICELoss, label_batch, mixup, smooth_labels


def gaussian_batch(n=32, dim=3, shift=1.0):
    pos = TensorDict(observation=torch.randn(n, dim) + shift, batch_size=[n])
    neg = TensorDict(observation=torch.randn(n, dim) - shift, batch_size=[n])
    return label_batch(pos, neg)


def linear_classifier(dim=3):
    return SuccessClassifier(in_features=dim, hidden_dims=())


def pixel_classifier():
    enc = MultiCameraEncoder(
        SmallConvEncoder(features=(4, 8), kernel_sizes=(3, 3), strides=(2, 2)),
        camera_keys=("front",),
        image_size=32,
        bottleneck_dim=8,
        proprio_key=None,
        freeze_trunk=True,
    )
    return SuccessClassifier(enc, hidden_dims=(8,), activation=nn.LeakyReLU)


def test_label_batch_puts_goals_first_with_label_one():
    pos = TensorDict(observation=torch.ones(2, 3), reward=torch.ones(2, 1), batch_size=[2])
    neg = TensorDict(observation=torch.zeros(3, 3), batch_size=[3])
    batch = label_batch(pos, neg)
    assert batch.shape == (5,) and set(batch.keys()) == {"observation", "label"}
    assert batch["label"].squeeze(-1).tolist() == [1, 1, 0, 0, 0]


def test_label_smoothing_targets_match_serl():
    labels = torch.tensor([[1.0], [0.0]])
    torch.testing.assert_close(smooth_labels(labels, 0.2), torch.tensor([[0.9], [0.1]]))
    torch.testing.assert_close(smooth_labels(labels, 0.0), labels)


def test_mixup_mixes_inputs_and_labels_by_hand():
    feats = TensorDict(observation=torch.tensor([[1.0, 2.0], [3.0, 5.0], [0.0, -1.0]]), batch_size=[3])
    y = torch.tensor([[0.9], [0.1], [0.1]])
    mixed, y_mixed = mixup(feats, y, 0.25, torch.tensor([1, 2, 0]))
    # x0' = 0.25 x0 + 0.75 x1, x1' = 0.25 x1 + 0.75 x2, x2' = 0.25 x2 + 0.75 x0
    expected_x = torch.tensor([[2.5, 4.25], [0.75, 0.5], [0.75, 1.25]])
    torch.testing.assert_close(mixed["observation"], expected_x)
    torch.testing.assert_close(y_mixed, torch.tensor([[0.3], [0.1], [0.7]]))


def test_loss_with_fixed_mixup_equals_hand_bce():
    torch.manual_seed(1)
    clf = linear_classifier(2)
    loss = BinaryClassifierLoss(clf, label_smoothing=0.2, mixup_alpha=1.0)
    loss.sample_mixup = lambda n, device: (torch.tensor(0.3), torch.tensor([1, 0]))
    batch = label_batch(
        TensorDict(observation=torch.tensor([[1.0, 2.0]]), batch_size=[1]),
        TensorDict(observation=torch.tensor([[-1.0, 0.5]]), batch_size=[1]),
    )
    out = loss(batch)
    w, b = clf.head[0].weight[0], clf.head[0].bias[0]
    x_pos, x_neg = torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 0.5])
    x0, x1 = 0.3 * x_pos + 0.7 * x_neg, 0.3 * x_neg + 0.7 * x_pos
    y0, y1 = 0.3 * 0.9 + 0.7 * 0.1, 0.3 * 0.1 + 0.7 * 0.9

    def bce(logit, y):
        p = torch.sigmoid(logit)
        return -(y * torch.log(p) + (1 - y) * torch.log(1 - p))

    expected = 0.5 * (bce(w @ x0 + b, y0) + bce(w @ x1 + b, y1))
    torch.testing.assert_close(out["loss_classifier"], expected)
    assert out["mixup_lambda"].item() == pytest.approx(0.3)


def test_gradient_penalty_of_a_linear_classifier_is_closed_form():
    clf = linear_classifier(3)
    out = BinaryClassifierLoss(clf, gp_weight=10.0)(gaussian_batch())
    w = clf.head[0].weight
    # d logit / d x = w at every point; SERL adds 1e-6 per element inside the norm.
    norm = torch.sqrt((w.pow(2) + 1e-6).sum())
    torch.testing.assert_close(out["loss_gradient_penalty"], 10.0 * (norm - 1) ** 2)
    torch.testing.assert_close(out["grad_norm"], norm.detach())


def test_gradient_penalty_matches_per_sample_autograd_on_pixel_features():
    clf = pixel_classifier().eval()  # no dropout: the reference below must see the same function
    loss = BinaryClassifierLoss(clf, gp_weight=1.0)
    batch = label_batch(
        TensorDict(front=torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8), batch_size=[3]),
        TensorDict(front=torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8), batch_size=[5]),
    )
    features = clf.features(batch)
    labels = batch["label"]
    torch.manual_seed(7)
    penalty, _ = loss._gradient_penalty(features, labels)

    torch.manual_seed(7)  # replay the same draws: positive indices, negative indices, epsilons
    pos_i = torch.randint(3, (4,))
    neg_i = torch.randint(5, (4,))
    eps = torch.rand(4)
    terms = []
    for i in range(4):
        point = eps[i] * features["front"][pos_i[i]] + (1 - eps[i]) * features["front"][3 + neg_i[i]]
        point = point.detach().requires_grad_(True)
        logit = clf.logits_from_features(TensorDict(front=point[None], batch_size=[1]))
        (g,) = torch.autograd.grad(logit.sum(), point)
        terms.append((torch.sqrt((g.pow(2) + 1e-6).sum()) - 1) ** 2)
    torch.testing.assert_close(penalty, torch.stack(terms).mean())


def test_gradient_penalty_trains_the_classifier_not_the_frozen_trunk():
    clf = pixel_classifier()
    batch = label_batch(
        TensorDict(front=torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), batch_size=[4]),
        TensorDict(front=torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), batch_size=[4]),
    )
    out = VICELoss(clf, mixup_alpha=0.0, label_smoothing=0.0)(batch)
    out["loss_gradient_penalty"].backward()
    assert all(p.grad is None for p in clf.encoder.trunk_parameters())
    assert clf.head[0].weight.grad.abs().sum() > 0
    assert clf.encoder.heads["front"][-3].weight.grad.abs().sum() > 0  # projection after pooling


def test_vice_on_pixels_with_serl_defaults_runs_and_backprops():
    clf = pixel_classifier()
    loss = VICELoss(clf)
    assert (loss.label_smoothing, loss.mixup_alpha, loss.gp_weight, loss.augment_pad, loss.keep_originals) == (
        0.2, 1.0, 10.0, 4, True
    )
    batch = label_batch(
        TensorDict(front=torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), batch_size=[4]),
        TensorDict(front=torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8), batch_size=[6]),
    )
    out = loss(batch)
    assert set(out.keys()) == {"loss_classifier", "loss_gradient_penalty", "accuracy", "grad_norm", "mixup_lambda"}
    sum(v for k, v in out.items() if k.startswith("loss_")).backward()
    assert 0.0 <= out["mixup_lambda"].item() <= 1.0


def test_augmentation_shifts_in_place_or_doubles_the_batch_with_shifted_copies():
    clf = pixel_classifier()
    seen = []
    original = clf.features
    clf.features = lambda td: seen.append(td["front"].clone()) or original(td)
    batch = label_batch(
        TensorDict(front=torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), batch_size=[2]),
        TensorDict(front=torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), batch_size=[2]),
    )
    BinaryClassifierLoss(clf, augment_pad=4, keep_originals=True)(batch)
    BinaryClassifierLoss(clf, augment_pad=4)(batch)
    doubled, in_place = seen
    assert doubled.shape == (8, 3, 32, 32)
    assert torch.equal(doubled[:4], batch["front"])
    assert not torch.equal(doubled[4:], batch["front"])
    assert in_place.shape == (4, 3, 32, 32) and not torch.equal(in_place, batch["front"])


@pytest.mark.parametrize("cls", [BinaryClassifierLoss, VICELoss])
def test_classifier_learns_to_separate_two_classes(cls):
    torch.manual_seed(0)
    clf = SuccessClassifier(in_features=3, hidden_dims=(32,), activation=nn.LeakyReLU)
    loss = cls(clf)
    optim = torch.optim.Adam(clf.parameters(), lr=3e-3)
    train = gaussian_batch(64, shift=2.0)
    for _ in range(300):
        out = loss(train)
        optim.zero_grad()
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        optim.step()
    test = gaussian_batch(256, shift=2.0)
    with torch.no_grad():
        acc = ((clf.eval()(test.clone())["logit"] > 0).float() == test["label"]).float().mean().item()
    # Held-out accuracy; the Bayes rate for unit Gaussians at +-2 in 3-D is Phi(2 sqrt(3)) = 0.9997.
    assert acc > 0.95


def test_set_keys_renames_the_label():
    loss = BinaryClassifierLoss(linear_classifier())
    loss.set_keys(label="is_goal")
    batch = gaussian_batch(4).rename_key_("label", "is_goal")
    assert loss.in_keys == ["observation", "is_goal"]
    assert torch.isfinite(loss(batch)["loss_classifier"])


def test_bad_batches_raise_clear_errors():
    loss = VICELoss(linear_classifier())
    batch = gaussian_batch(4)
    with pytest.raises(KeyError, match="label"):
        loss(batch.exclude("label"))
    with pytest.raises(ValueError, match="both"):
        loss(batch[:4])
    with pytest.raises(ValueError, match="shape"):
        loss(gaussian_batch(4).set("label", torch.ones(8, 2)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        loss(gaussian_batch(4).set("label", torch.full((8, 1), 0.5)))
    with pytest.raises(ValueError, match="NaN"):
        loss(gaussian_batch(4).set("observation", torch.full((8, 3), float("nan"))))
    for kwargs in ({"label_smoothing": 1.0}, {"mixup_alpha": -1.0}, {"gp_weight": -1.0}, {"augment_pad": -1}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            VICELoss(linear_classifier(), **kwargs)


def test_select_out_keys_filters_forward():
    loss = VICELoss(linear_classifier(), augment_pad=0)
    batch = gaussian_batch(8)
    loss.select_out_keys("loss_classifier", "loss_gradient_penalty")
    assert set(loss(batch).keys()) == {"loss_classifier", "loss_gradient_penalty"}
