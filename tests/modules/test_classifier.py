import pytest
import torch
from tensordict import TensorDict
from torch import nn

from torchrl_serl.modules.classifier import (
    ClassifierReward,
    SuccessClassifier,
    load_pixel_classifier,
    make_pixel_classifier,
)
from torchrl_serl.modules.encoders import MultiCameraEncoder, SmallConvEncoder


def tiny_encoder(proprio_key=None):
    """A real MultiCameraEncoder at test size: frozen two-layer conv trunk on 32x32 images."""
    return MultiCameraEncoder(
        SmallConvEncoder(features=(4, 8), kernel_sizes=(3, 3), strides=(2, 2)),
        camera_keys=("front",),
        image_size=32,
        bottleneck_dim=8,
        proprio_key=proprio_key,
        freeze_trunk=True,
    )


def pixels(n):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)


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
    enc = tiny_encoder()
    clf = SuccessClassifier(enc, hidden_dims=(8,))
    assert clf.in_keys == ["front"]  # images only, like SERL
    td = TensorDict(front=pixels(3), batch_size=[3])
    clf(td)["logit"].sum().backward()
    assert td["logit"].shape == (3, 1)
    assert all(p.grad is None for p in enc.trunk_parameters())
    assert all(p.grad is not None for p in enc.head_parameters())


def test_pixel_classifier_reads_the_encoders_state_key():
    clf = SuccessClassifier(tiny_encoder(proprio_key="observation"), hidden_dims=(8,))
    td = TensorDict(front=pixels(2), observation=torch.randn(2, 7), batch_size=[2])
    assert clf.in_keys == ["front", "observation"]
    assert clf(td)["logit"].shape == (2, 1)
    feats = clf.features(td)
    assert feats["front"].shape == (2, 8, 7, 7) and feats["observation"].shape == (2, 7)


def test_serl_pixel_classifier_builder():
    clf = make_pixel_classifier(("front", "wrist"), image_size=64)
    assert clf.in_keys == ["front", "wrist"] and clf.encoder.freeze_trunk
    image = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    td = TensorDict(front=image, wrist=image.clone(), batch_size=[2])
    assert clf(td)["logit"].shape == (2, 1)
    assert not make_pixel_classifier(("front",), image_size=64, trunk="small").encoder.freeze_trunk


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


def test_a_saved_pixel_classifier_is_rebuilt_from_its_file_alone(tmp_path):
    # the frozen trunk's weights travel in the file: the rebuilt trunk is random until loaded
    torch.manual_seed(0)
    saved = make_pixel_classifier(("front", "wrist"), image_size=32, bottleneck_dim=16, hidden_dims=(8,),
                                  activation=nn.LeakyReLU).eval()
    saved.save(tmp_path / "clf.pt")
    torch.manual_seed(1)
    loaded = load_pixel_classifier(tmp_path / "clf.pt")
    assert not loaded.training and isinstance(loaded.head[-2], nn.LeakyReLU)
    image = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    td = TensorDict(front=image, wrist=image.flip(-1), batch_size=[2])
    torch.testing.assert_close(loaded(td.clone())["logit"], saved(td.clone())["logit"])


def test_loading_a_classifier_without_its_architecture_says_so(tmp_path):
    SuccessClassifier(in_features=3, hidden_dims=(8,)).save(tmp_path / "state.pt")
    with pytest.raises(ValueError, match="does not say how its classifier was built"):
        load_pixel_classifier(tmp_path / "state.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a saved classifier"):
        load_pixel_classifier(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="no reward classifier"):
        load_pixel_classifier(tmp_path / "missing.pt")


def test_bad_inputs_raise_clear_errors():
    clf = SuccessClassifier(in_features=3, hidden_dims=(8,))
    with pytest.raises(KeyError, match="observation"):
        clf(TensorDict(state=torch.zeros(2, 3), batch_size=[2]))
    with pytest.raises(ValueError, match="NaN"):
        clf(TensorDict(observation=torch.full((2, 3), float("nan")), batch_size=[2]))
    pix = SuccessClassifier(tiny_encoder())
    with pytest.raises(ValueError, match="channels-first"):
        pix(TensorDict(front=torch.zeros(2, 32, 32, 3, dtype=torch.uint8), batch_size=[2]))
    with pytest.raises(ValueError, match="dropout"):
        SuccessClassifier(in_features=3, dropout=1.0)


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
