import pickle

import numpy as np
import pytest
import torch

from torchrl_serl.modules.encoders import (
    MultiCameraEncoder,
    convert_serl_resnet10,
    load_serl_resnet10_params,
    resnet10,
    to_serl_resnet10,
)


def serl_resnet10_tree(seed: int = 0) -> dict:
    """The parameter tree SERL's Flax ``resnetv1-10`` has, with Flax's auto-generated names."""
    rng = np.random.default_rng(seed)

    def gn(c):
        return {"scale": rng.standard_normal(c).astype(np.float32), "bias": rng.standard_normal(c).astype(np.float32)}

    def kernel(k, c_in, c_out):
        return {"kernel": rng.standard_normal((k, k, c_in, c_out)).astype(np.float32)}

    tree = {"conv_init": kernel(7, 3, 64), "norm_init": gn(64)}
    c_in = 64
    for i, c in enumerate((64, 128, 256, 512)):
        block = {
            "Conv_0": kernel(3, c_in, c),
            "MyGroupNorm_0": gn(c),
            "Conv_1": kernel(3, c, c),
            "MyGroupNorm_1": gn(c),
        }
        if c != c_in:
            block["conv_proj"] = kernel(1, c_in, c)
            block["norm_proj"] = gn(c)
        tree[f"ResNetBlock_{i}"] = block
        c_in = c
    return tree


def test_converted_tree_loads_strictly_with_transposes():
    tree = serl_resnet10_tree()
    trunk = resnet10()
    trunk.load_state_dict(convert_serl_resnet10(tree))  # strict: every name and shape matches
    hwio = tree["ResNetBlock_1"]["Conv_0"]["kernel"]
    assert np.array_equal(trunk.blocks[1].conv1.weight[5, 7].detach().numpy(), hwio[:, :, 7, 5])
    assert np.array_equal(trunk.blocks[3].proj_norm.weight.detach().numpy(), tree["ResNetBlock_3"]["norm_proj"]["scale"])
    assert np.array_equal(trunk.norm_init.bias.detach().numpy(), tree["norm_init"]["bias"])


def test_round_trip_and_wrapped_trees():
    tree = serl_resnet10_tree(1)
    back = to_serl_resnet10(convert_serl_resnet10({"params": {"pretrained_encoder": tree}}))
    flat = lambda t, p="": {  # noqa: E731
        k2: v2 for k, v in t.items() for k2, v2 in (flat(v, f"{p}/{k}") if isinstance(v, dict) else {f"{p}/{k}": v}).items()
    }
    a, b = flat(tree), flat(back)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_unknown_or_malformed_params_fail_loudly():
    tree = serl_resnet10_tree()
    tree["ResNetBlock_0"]["Dense_0"] = {"kernel": np.zeros((3, 3), np.float32)}
    with pytest.raises(KeyError, match="ResNetBlock_0/Dense_0/kernel"):
        convert_serl_resnet10(tree)
    with pytest.raises(KeyError, match="conv_init"):
        convert_serl_resnet10({"encoder": {}})
    bad = serl_resnet10_tree()
    bad["conv_init"]["kernel"] = np.zeros((7, 7, 3), np.float32)
    with pytest.raises(ValueError, match="4-D HWIO"):
        convert_serl_resnet10(bad)


def test_load_pickle_into_multi_camera_encoder(tmp_path):
    tree = serl_resnet10_tree(2)
    path = tmp_path / "resnet10_params.pkl"
    with open(path, "wb") as f:
        pickle.dump(tree, f)
    enc = MultiCameraEncoder(resnet10(), camera_keys=("front", "wrist"), image_size=64)
    with pytest.raises(PermissionError, match="trust_pickle"):
        enc.load_pretrained(path)
    with pytest.warns(UserWarning, match="runs any code"):
        enc.load_pretrained(path, trust_pickle=True)
    expected = torch.from_numpy(tree["conv_init"]["kernel"]).permute(3, 2, 0, 1)
    assert torch.equal(enc.trunk("front").conv_init.weight, expected)
    assert torch.equal(load_serl_resnet10_params(path, trust_pickle=True)["conv_init.weight"], expected)
    # A torch state_dict file works too, and a missing file is an error, never a download.
    torch.save(resnet10().state_dict(), tmp_path / "trunk.pt")
    enc.load_pretrained(tmp_path / "trunk.pt")
    assert not torch.equal(enc.trunk("wrist").conv_init.weight, expected)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        enc.load_pretrained(tmp_path / "nope.pkl")
