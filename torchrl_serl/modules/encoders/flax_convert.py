"""Convert SERL's published Flax ResNet-10 parameters (``resnet10_params.pkl``) to/from PyTorch.

SERL's tree (``serl_launcher/vision/resnet_v1.py``, ``ResNetEncoder``) is::

    conv_init/kernel                      [7, 7, 3, 64]   HWIO
    norm_init/{scale, bias}               [64]
    ResNetBlock_{i}/Conv_0/kernel         [3, 3, C_in, C]
    ResNetBlock_{i}/MyGroupNorm_0/{scale, bias}
    ResNetBlock_{i}/Conv_1/kernel         [3, 3, C, C]
    ResNetBlock_{i}/MyGroupNorm_1/{scale, bias}
    ResNetBlock_{i}/conv_proj/kernel      [1, 1, C_in, C]   (blocks that change shape)
    ResNetBlock_{i}/norm_proj/{scale, bias}

and maps onto :class:`~torchrl_serl.modules.encoders.resnet.ResNetEncoder` (kernels HWIO -> OIHW,
``scale`` -> ``weight``). Blocks are numbered in order over all stages, as Flax names them.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

_BLOCK_PARTS = {
    "Conv_0": "conv1",
    "MyGroupNorm_0": "norm1",
    "Conv_1": "conv2",
    "MyGroupNorm_1": "norm2",
    "conv_proj": "proj_conv",
    "norm_proj": "proj_norm",
}
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias"}


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for k, v in tree.items():
        name = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            flat.update(_flatten(v, name))
        else:
            flat[name] = np.asarray(v)
    return flat


def _unwrap(params: Mapping) -> Mapping:
    # The release pickle holds the encoder tree itself; agent checkpoints nest it deeper.
    while "conv_init" not in params:
        for wrapper in ("params", "pretrained_encoder"):
            if wrapper in params and isinstance(params[wrapper], Mapping):
                params = params[wrapper]
                break
        else:
            raise KeyError(
                f"not a SERL ResNet parameter tree: no 'conv_init' at the top level (keys: {sorted(params)[:10]})"
            )
    return params


def convert_serl_resnet10(params: Mapping) -> dict[str, torch.Tensor]:
    """SERL Flax ResNet param tree (nested mapping of arrays) -> ``ResNetEncoder.state_dict()``.

    Raises ``KeyError`` for names it does not know and ``ValueError`` for kernels that are not 4-D,
    so a tree from another architecture fails loudly instead of loading half the weights.
    """
    flat = _flatten(_unwrap(params))
    state = {}
    for name, value in flat.items():
        parts = name.split("/")
        if len(parts) == 2 and parts[0] in ("conv_init", "norm_init"):
            module = parts[0]
        elif len(parts) == 3 and re.fullmatch(r"ResNetBlock_\d+", parts[0]) and parts[1] in _BLOCK_PARTS:
            module = f"blocks.{int(parts[0].split('_')[1])}.{_BLOCK_PARTS[parts[1]]}"
        else:
            raise KeyError(f"unexpected SERL ResNet parameter {name!r}")
        leaf = parts[-1]
        if leaf not in _LEAVES:
            raise KeyError(f"unexpected SERL ResNet leaf {name!r}; expected one of {sorted(_LEAVES)}")
        tensor = torch.from_numpy(np.array(value, dtype=np.float32))
        if leaf == "kernel":
            if tensor.ndim != 4:
                raise ValueError(f"{name} must be a 4-D HWIO kernel, got shape {tuple(tensor.shape)}")
            tensor = tensor.permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
        state[f"{module}.{_LEAVES[leaf]}"] = tensor
    return state


def to_serl_resnet10(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """``ResNetEncoder.state_dict()`` -> SERL's nested Flax tree of float32 numpy arrays (for export)."""
    inverse_parts = {v: k for k, v in _BLOCK_PARTS.items()}
    tree: dict = {}
    for name, tensor in state_dict.items():
        *module, leaf = name.split(".")
        value = tensor.detach().cpu().float()
        if value.ndim == 4:
            value = value.permute(2, 3, 1, 0)  # OIHW -> HWIO
            flax_leaf = "kernel"
        else:
            flax_leaf = "scale" if leaf == "weight" else "bias"
        if module[0] == "blocks":
            path = [f"ResNetBlock_{module[1]}", inverse_parts[module[2]]]
        else:
            path = [module[0]]
        node = tree
        for p in path:
            node = node.setdefault(p, {})
        node[flax_leaf] = value.numpy().copy()
    return tree


def load_serl_resnet10_params(path: str | Path, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a local SERL ``resnet10_params.pkl`` and convert it (nothing is downloaded).

    The release file is a pickle of the Flax tree, and unpickling runs whatever code the file
    names: it is refused unless ``trust_pickle=True``, which you pass only for a file you trust
    (SERL's own release). Convert it once, ``torch.save`` the result, and load that ``.pt``
    (read with ``weights_only=True``) from then on. A pickle that stores ``jax`` arrays needs
    ``jax`` importable to load.

    Raises:
        PermissionError: ``trust_pickle`` is ``False``; nothing was read.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"SERL ResNet-10 params not found at {path} (nothing is downloaded)")
    if not trust_pickle:
        raise PermissionError(
            f"{path} is a pickle, and unpickling runs any code the file names; refusing to load it. Pass "
            "trust_pickle=True (load_pretrained(path, trust_pickle=True)) only for a file you trust, such as "
            "SERL's own resnet10_params.pkl, or load a torch.save-d state_dict (.pt) instead"
        )
    with open(path, "rb") as f:
        try:
            params = pickle.load(f)
        except ModuleNotFoundError as err:
            raise ModuleNotFoundError(
                f"{path} stores objects from {err.name!r}; install it to unpickle, or re-save the tree "
                "as nested dicts of numpy arrays"
            ) from err
    return convert_serl_resnet10(params)
