import pytest
import torch
from tensordict import TensorDict
from torch import nn

from torchrl_serl.modules.classifier import ClassifierReward, SuccessClassifier


class TinyPixelEncoder(nn.Module):
    """Encoder with the conventions' two-stage interface: a frozen conv trunk, then a trained projection."""

    image_keys = ("front",)

    def __init__(self):
        super().__init__()
        self.trunk = nn.Conv2d(3, 4, 4, stride=4).requires_grad_(False)
        self.proj = nn.Linear(4 * 4 * 4, 8)

    def encode_images(self, td):
        with torch.no_grad():
            return td.empty().set("front", self.trunk(td["front"].float() / 255.0))

    def forward_features(self, features, observation):
        x = features["front"].flatten(-3)
        return self.proj(x if observation is None else torch.cat([x, observation], -1))


def state_td(n=4, dim=3):
    return TensorDict(observation=torch.randn(n, dim), batch_size=[n])


def test_state_classifier_writes_logit_of_shape_b1():
    clf = SuccessClassifier(in_features=3, hidden_dims=(8, 8))
    td = clf(state_td(5))
    assert td["logit"].shape == (5, 1) and td["logit"].dtype == torch.float32
    assert clf.in_keys == ["observation"] and clf.out_keys == ["logit"]


def test_serl_head_layout_linear_dropout_layernorm_activation():
    clf = SuccessClassifier(in_features=3)
    kinds = [type(m) for m in clf.head]
    assert kinds == [nn.Linear, nn.Dropout, nn.LayerNorm, nn.ReLU, nn.Linear]
    assert clf.head[0].out_features == 256 and clf.head[1].p == 0.1


def test_pixel_classifier_trains_projection_and_head_not_frozen_trunk():
    enc = TinyPixelEncoder()
    clf = SuccessClassifier(enc, in_features=8, hidden_dims=(8,))
    assert clf.in_keys == ["front"]  # images only by default, like SERL
    td = TensorDict(front=torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8), batch_size=[3])
    clf(td)["logit"].sum().backward()
    assert td["logit"].shape == (3, 1)
    assert enc.trunk.weight.grad is None
    assert enc.proj.weight.grad.abs().sum() > 0


def test_pixel_classifier_can_also_read_state():
    enc = TinyPixelEncoder()
    clf = SuccessClassifier(enc, in_features=8, hidden_dims=(8,), use_state=True)
    enc.proj = nn.Linear(4 * 4 * 4 + 7, 8)
    td = TensorDict(
        front=torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8), observation=torch.randn(2, 7), batch_size=[2]
    )
    assert clf.in_keys == ["front", "observation"]
    assert clf(td)["logit"].shape == (2, 1)


def test_save_load_round_trip(tmp_path):
    a = SuccessClassifier(in_features=3, hidden_dims=(8,)).eval()
    b = SuccessClassifier(in_features=3, hidden_dims=(8,)).eval()
    td = state_td()
    assert not torch.allclose(a(td.clone())["logit"], b(td.clone())["logit"])
    a.save(tmp_path / "clf.pt")
    b.load(tmp_path / "clf.pt")
    torch.testing.assert_close(a(td.clone())["logit"], b(td.clone())["logit"])


def test_load_refuses_a_classifier_with_other_inputs(tmp_path):
    SuccessClassifier(in_features=3, hidden_dims=(8,)).save(tmp_path / "clf.pt")
    other = SuccessClassifier(in_features=3, hidden_dims=(8,), state_key="state")
    with pytest.raises(ValueError, match="reading"):
        other.load(tmp_path / "clf.pt")


def test_bad_inputs_raise_clear_errors():
    clf = SuccessClassifier(in_features=3, hidden_dims=(8,))
    with pytest.raises(KeyError, match="observation"):
        clf(TensorDict(state=torch.zeros(2, 3), batch_size=[2]))
    with pytest.raises(ValueError, match="NaN"):
        clf(TensorDict(observation=torch.full((2, 3), float("nan")), batch_size=[2]))
    pix = SuccessClassifier(TinyPixelEncoder(), in_features=8)
    with pytest.raises(ValueError, match="channels-first"):
        pix(TensorDict(front=torch.zeros(2, 16, 16, 3, dtype=torch.uint8), batch_size=[2]))
    with pytest.raises(ValueError, match="dropout"):
        SuccessClassifier(in_features=3, dropout=1.0)
    with pytest.raises(ValueError, match="encoder"):
        SuccessClassifier(use_state=False)


@pytest.mark.parametrize("mode", ["prob", "log_prob", "threshold"])
def test_classifier_reward_modes(mode):
    clf = SuccessClassifier(in_features=3, hidden_dims=(8,))
    td = state_td(16)
    with torch.no_grad():
        logit = clf.eval()(td.clone())["logit"]
    clf.train()
    out = ClassifierReward(clf, mode, threshold=0.5)(td)
    expected = {
        "prob": torch.sigmoid(logit),
        "log_prob": torch.log(torch.sigmoid(logit)),
        "threshold": (torch.sigmoid(logit) >= 0.5).float(),
    }[mode]
    torch.testing.assert_close(out["reward"], expected)
    assert out["reward"].shape == (16, 1) and out["reward"].dtype == torch.float32
    assert torch.equal(out["success"], torch.sigmoid(logit) >= 0.5)
    assert clf.training  # the reward ran in eval mode and restored the caller's mode


def test_classifier_reward_threshold_is_a_probability_cut():
    clf = SuccessClassifier(in_features=1, hidden_dims=())
    with torch.no_grad():
        clf.head[0].weight.fill_(1.0)
        clf.head[0].bias.zero_()
    # logits -2, 0.8, 1.5 -> probabilities 0.12, 0.69, 0.82
    td = TensorDict(observation=torch.tensor([[-2.0], [0.8], [1.5]]), batch_size=[3])
    out = ClassifierReward(clf, "threshold", threshold=0.75)(td)
    assert out["reward"].squeeze(-1).tolist() == [0.0, 0.0, 1.0]


def test_classifier_reward_on_a_single_unbatched_step():
    clf = SuccessClassifier(in_features=3, hidden_dims=(8,))
    out = ClassifierReward(clf, "prob")(TensorDict(observation=torch.randn(3), batch_size=[]))
    assert out["reward"].shape == (1,) and out["success"].shape == (1,)


def test_classifier_reward_rejects_bad_settings():
    clf = SuccessClassifier(in_features=3)
    with pytest.raises(ValueError, match="mode"):
        ClassifierReward(clf, "logit")
    with pytest.raises(ValueError, match="threshold"):
        ClassifierReward(clf, "threshold", threshold=1.0)
