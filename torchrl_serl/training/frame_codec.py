"""Camera frames of a transition batch, compressed for the actor/learner link.

A batch of ``T`` consecutive transitions holds each camera twice: ``key [T, C, H, W]`` and
``("next", key) [T, C, H, W]``, where ``next[t]`` is the frame ``obs[t + 1]`` unless an episode ended
at ``t``. :func:`compress_frames` keeps each distinct frame once (at most ``T + episodes ended``
instead of ``2 T``) and encodes it with ``torchvision.io`` as PNG (lossless: the learner trains on the
pixels the actor saw) or JPEG (``quality`` 90: several times smaller, not exact);
:func:`decompress_frames` rebuilds the dense tensors and refuses anything it did not write.

A camera is a top-level ``uint8`` entry of per-transition shape ``[1 or 3, H, W]`` with the same entry
under ``"next"``.
"""
from __future__ import annotations

import torch
from torchvision.io import ImageReadMode, decode_image, encode_jpeg, encode_png

from torchrl_serl.data.pixel_storage import next_is_following_frame

CODECS = ("png", "jpeg")
JPEG_QUALITY = 90
MAX_SIDE = 4096  # the largest frame side decoded when the expected shape is not known
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class FrameCodecError(ValueError):
    """Compressed frames that do not decode as :func:`compress_frames` wrote them."""


def camera_keys(data: dict, batch_dims: int = 1) -> list[str]:
    """The camera entries of a batch's ``to_dict()``: uint8 ``[*B, 1|3, H, W]``, also under ``"next"``."""
    nxt = data.get("next", {})
    keys = []
    for key, value in data.items():
        if (isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == batch_dims + 3
                and value.shape[batch_dims] in (1, 3) and isinstance(nxt, dict)
                and isinstance(nxt.get(key), torch.Tensor) and nxt[key].shape == value.shape
                and nxt[key].dtype == torch.uint8):
            keys.append(key)
    return keys


def compress_frames(data: dict, codec: str = "png") -> tuple[dict, dict]:
    """``(data without its camera entries, frames)`` for a ``[T]`` batch's ``to_dict()``.

    ``frames[key]``: ``codec``, the encoded distinct frames concatenated (``bytes`` uint8 ``[N]``,
    ``lengths`` int64 ``[F]``) and, for each transition, the frame index of its observation
    (``obs`` int64 ``[T]``) and next observation (``next`` int64 ``[T]``).
    """
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")
    keys = camera_keys(data)
    rest = {k: v for k, v in data.items() if k not in keys}
    rest["next"] = {k: v for k, v in data.get("next", {}).items() if k not in keys}
    frames = {}
    for key in keys:
        obs, nxt = data[key], data["next"][key]
        steps = obs.shape[0]
        distinct = list(obs.unbind(0))
        next_index = []
        for t, follows in enumerate(next_is_following_frame(obs, nxt).tolist()):
            if follows:
                next_index.append(t + 1)  # the frame the next step observes: sent once
            else:  # the last step, or an episode ended here (the next observation is a reset)
                next_index.append(len(distinct))
                distinct.append(nxt[t])
        encoded = [encode_png(f) if codec == "png" else encode_jpeg(f, quality=JPEG_QUALITY) for f in distinct]
        frames[key] = {
            "codec": codec,
            "bytes": torch.cat(encoded),
            "lengths": torch.tensor([len(e) for e in encoded], dtype=torch.int64),
            "obs": torch.arange(steps, dtype=torch.int64),
            "next": torch.tensor(next_index, dtype=torch.int64),
        }
    return rest, frames


def decompress_frames(data: dict, frames: dict, steps: int, frame_shape: dict[str, tuple] | None = None) -> dict:
    """``data`` with the camera entries ``frames`` held put back (``[steps, C, H, W]`` uint8 each).

    Raises :class:`FrameCodecError` for anything :func:`compress_frames` would not have written:
    more than ``2 steps`` frames, indices out of range, lengths that do not add up, a frame that does
    not decode, frames of different shapes or, with ``frame_shape`` (``{key: (C, H, W)}``), of
    another shape than expected.
    """
    if not isinstance(frames, dict):
        raise FrameCodecError(f"frames must be a dict, got {type(frames).__name__}")
    data = dict(data)
    data["next"] = dict(data.get("next", {}))
    for key, entry in frames.items():
        if not isinstance(entry, dict) or set(entry) != {"codec", "bytes", "lengths", "obs", "next"}:
            raise FrameCodecError(f"frames of {key!r} are not as compress_frames writes them")
        if entry["codec"] not in CODECS:
            raise FrameCodecError(f"frames of {key!r}: unknown codec {entry['codec']!r}")
        raw, lengths, obs, nxt = entry["bytes"], entry["lengths"], entry["obs"], entry["next"]
        for name, value, dtype in (("bytes", raw, torch.uint8), ("lengths", lengths, torch.int64),
                                   ("obs", obs, torch.int64), ("next", nxt, torch.int64)):
            if type(value) is not torch.Tensor or value.dtype != dtype or value.dim() != 1:
                raise FrameCodecError(f"frames of {key!r}: {name} is not a 1-D {dtype} tensor")
        count = lengths.numel()
        if not 0 < count <= 2 * steps or obs.numel() != steps or nxt.numel() != steps:
            raise FrameCodecError(f"frames of {key!r}: {count} frames and {obs.numel()}/{nxt.numel()} indices "
                                  f"for {steps} steps")
        if bool((lengths <= 0).any()) or int(lengths.sum()) != raw.numel():
            raise FrameCodecError(f"frames of {key!r}: lengths do not add up to the {raw.numel()} bytes sent")
        if bool(((obs < 0) | (obs >= count) | (nxt < 0) | (nxt >= count)).any()):
            raise FrameCodecError(f"frames of {key!r}: a frame index is out of range")
        expected = frame_shape.get(key) if frame_shape else None
        parts = raw.split(lengths.tolist())
        for part in parts:  # the size each frame declares, checked before anything is allocated for it
            side = _declared_size(bytes(part[:65536].tolist()), entry["codec"])
            if side is None or (expected is not None and side != tuple(expected[1:])) or max(side) > MAX_SIDE:
                raise FrameCodecError(f"frames of {key!r}: a frame declares size {side}"
                                      + (f", expected {tuple(expected[1:])}" if expected is not None else ""))
        try:
            decoded = [decode_image(part, mode=ImageReadMode.UNCHANGED) for part in parts]
        except RuntimeError as err:
            raise FrameCodecError(f"frames of {key!r} do not decode: {err}") from None
        shapes = {tuple(f.shape) for f in decoded}
        if len(shapes) != 1 or (expected is not None and shapes != {tuple(expected)}):
            raise FrameCodecError(f"frames of {key!r} have shapes {sorted(shapes)}"
                                  + (f", expected {tuple(expected)}" if expected is not None else ""))
        stack = torch.stack(decoded)
        data[key], data["next"][key] = stack[obs], stack[nxt]
    return data


def _declared_size(head: bytes, codec: str) -> tuple[int, int] | None:
    """``(height, width)`` a PNG or JPEG frame declares in its header; ``None`` if it declares none."""
    if codec == "png":
        if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
            return None
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    if head[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(head):  # marker segments up to the frame header
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker in _JPEG_SOF:
            return int.from_bytes(head[i + 5:i + 7], "big"), int.from_bytes(head[i + 7:i + 9], "big")
        i += 2 + int.from_bytes(head[i + 2:i + 4], "big")
    return None
