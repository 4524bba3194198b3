"""One pixel encoder factory for DrQ, BC, the reward classifier and VICE."""
import pytest
import torch
from tensordict import TensorDict

from torchrl_serl.modules import make_drq_networks, make_pixel_classifier, make_pixel_encoder


def test_frozen_resnet_or_trained_small_encoder_with_serls_poolings():
    frozen = make_pixel_encoder(("front",), 32, encoder="resnet10", proprio_dim=7)
    assert frozen.freeze_trunk and not any(p.requires_grad for p in frozen.trunk_parameters())
    small = make_pixel_encoder(("front",), 32, encoder="small", proprio_key=None)
    assert not small.freeze_trunk and all(p.requires_grad for p in small.trunk_parameters())
    td = TensorDict(front=torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), observation=torch.zeros(2, 7),
                    batch_size=[2])
    assert frozen(td.clone())["embedding"].shape == (2, frozen.out_features)
    assert small(td.clone())["embedding"].shape == (2, small.out_features)
    with pytest.raises(ValueError, match="trained from scratch"):
        make_pixel_encoder(encoder="small", pretrained_path="trunk.pt")
    with pytest.raises(ValueError, match="unknown encoder 'resnet18'"):
        make_pixel_encoder(encoder="resnet18")


def test_drq_networks_and_classifier_use_its_encoder():
    cams = ("front", "wrist")
    _, _, drq_encoder = make_drq_networks(cams, 32, encoder="small", num_critics=2, hidden=(8,))
    expected = make_pixel_encoder(cams, 32, encoder="small")
    assert drq_encoder.state_dict().keys() == expected.state_dict().keys()
    classifier = make_pixel_classifier(cams, 32, trunk="small", bottleneck_dim=16)
    images_only = make_pixel_encoder(cams, 32, encoder="small", bottleneck_dim=16, proprio_key=None)
    assert classifier.encoder.state_dict().keys() == images_only.state_dict().keys()
    assert classifier.encoder.proprio_key is None
