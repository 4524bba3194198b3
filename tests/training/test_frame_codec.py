"""Compressed camera frames across the actor/learner link: each distinct frame once, PNG exact,
JPEG close, anything malformed refused before it is decoded."""
import pytest
import torch
from tensordict import TensorDict
from torchvision.io import encode_png

from torchrl_serl.training.distributed import (
    ActorLink,
    BadPayload,
    LearnerLink,
    _td_schema,
    batch_from_bytes,
    batch_to_bytes,
)
from torchrl_serl.training.frame_codec import FrameCodecError, compress_frames, decompress_frames

SECRET = "a-shared-secret-of-enough-length"
STEPS, SIDE = 6, 32


def frame(i: int) -> torch.Tensor:
    """A smooth 3 x 32 x 32 uint8 frame that differs with ``i``."""
    y, x = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
    return torch.stack([(x * 4 + i * 20) % 256, (y * 4 + i * 7) % 256, ((x + y) * 2 + i) % 256]).to(torch.uint8)


def pixel_batch(episode_end: int = 2) -> TensorDict:
    """``STEPS`` consecutive transitions with two cameras; an episode ends at ``episode_end``
    (the next step starts from a reset frame)."""
    stream = [frame(i) for i in range(STEPS + 2)]
    obs = [stream[t] if t <= episode_end else stream[t + 1] for t in range(STEPS)]  # frame episode_end+1 ends it
    nxt = [stream[t + 1] if t < episode_end else stream[t + 2] if t > episode_end else stream[episode_end + 1]
           for t in range(STEPS)]
    done = torch.zeros(STEPS, 1, dtype=torch.bool)
    done[episode_end] = True
    cams = {"front": torch.stack(obs), "wrist": torch.stack(obs).flip(-1)}
    next_cams = {"front": torch.stack(nxt), "wrist": torch.stack(nxt).flip(-1)}
    return TensorDict({
        **cams, "observation": torch.randn(STEPS, 7), "action": torch.rand(STEPS, 4),
        "next": {**next_cams, "observation": torch.randn(STEPS, 7), "reward": torch.rand(STEPS, 1), "done": done,
                 "terminated": done.clone(), "policy_version": torch.zeros(STEPS, 1, dtype=torch.int64)},
    }, batch_size=[STEPS])


def test_png_frames_come_back_exact_and_each_distinct_frame_travels_once():
    batch = pixel_batch(episode_end=2)
    rest, frames = compress_frames(batch.to_dict(), "png")
    assert set(frames) == {"front", "wrist"} and "front" not in rest and "front" not in rest["next"]
    # 6 observations + the frame that ended the episode + the last next observation
    assert frames["front"]["lengths"].numel() == STEPS + 2
    back = TensorDict(decompress_frames(rest, frames, STEPS), batch_size=[STEPS])
    assert (back == batch).all()


def test_jpeg_frames_are_close_and_smaller_than_raw():
    # (which of PNG and JPEG is smaller depends on the images: benchmarks/bench_link_bytes.py measures
    # rendered frames)
    batch = pixel_batch()
    jpeg = batch_to_bytes(batch, "jpeg")
    assert len(jpeg) < len(batch_to_bytes(batch)) / 2
    back = batch_from_bytes(jpeg)
    err = (back["front"].float() - batch["front"].float()).abs().mean()
    assert err < 8, err  # lossy, close
    assert (back["observation"] == batch["observation"]).all()


def test_compressed_batches_cross_the_link_exactly():
    batch = pixel_batch()
    link = LearnerLink("127.0.0.1", 0, secret=SECRET, transition_example=batch)
    actor = ActorLink("127.0.0.1", link.port, 5.0, secret=SECRET, image_codec="png")
    try:
        assert actor.push(batch, 0)
        (received,) = link.pull()
        assert (received.exclude("collector") == batch).all()
        assert actor.stats["bytes_sent"] < len(batch_to_bytes(batch)) / 2
    finally:
        actor.close()
        link.close()


def _tamper(frames: dict, key: str, value) -> dict:
    """``frames`` with the front camera's ``key`` replaced by ``value``."""
    return {**frames, "front": {**frames["front"], key: value}}


def _corrupt_body(frames: dict) -> dict:
    raw = frames["front"]["bytes"].clone()
    raw[40:int(frames["front"]["lengths"][0]) - 4] = 7  # the PNG header intact, its image data not
    return _tamper(frames, "bytes", raw)


@pytest.mark.parametrize("what, tamper, match", [
    ("a frame that does not decode", _corrupt_body, "do not decode"),
    ("a corrupt frame", lambda f: _tamper(f, "bytes", torch.full_like(f["front"]["bytes"], 7)), "declares size None"),
    ("lengths that do not add up", lambda f: _tamper(f, "lengths", f["front"]["lengths"] + 1), "do not add up"),
    ("an index out of range", lambda f: _tamper(f, "next", f["front"]["next"] + 100), "out of range"),
    ("too many frames", lambda f: _tamper(f, "lengths", torch.ones(100, dtype=torch.int64)), "100 frames"),
    ("an unknown codec", lambda f: _tamper(f, "codec", "gif"), "unknown codec"),
    ("a float index", lambda f: _tamper(f, "obs", f["front"]["obs"].float()), "not a 1-D torch.int64"),
])
def test_malformed_frames_are_refused(what, tamper, match):
    rest, frames = compress_frames(pixel_batch().to_dict(), "png")
    with pytest.raises(FrameCodecError, match=match):
        decompress_frames(rest, tamper(frames), STEPS)


def test_a_frame_that_declares_a_huge_size_is_refused_before_decoding():
    # a PNG header claiming 60000 x 60000 (10 GB decoded) with nothing behind it
    header = bytearray(encode_png(frame(0)).numpy().tobytes()[:33])
    header[16:24] = (60000).to_bytes(4, "big") * 2
    rest, frames = compress_frames(pixel_batch().to_dict(), "png")
    bomb = torch.frombuffer(bytes(header), dtype=torch.uint8).clone()
    lengths = frames["front"]["lengths"].clone()
    raw = frames["front"]["bytes"]
    tampered = torch.cat([bomb, raw[int(lengths[0]):]])
    lengths[0] = bomb.numel()
    frames = {**frames, "front": {**frames["front"], "bytes": tampered, "lengths": lengths}}
    with pytest.raises(FrameCodecError, match="declares size \\(60000, 60000\\)"):
        decompress_frames(rest, frames, STEPS)
    # and with the learner's schema, a frame of another size than the learner's cameras is refused too
    with pytest.raises(BadPayload, match="declares size"):
        other = pixel_batch()
        schema = {k: v for k, v in _td_schema(other).items()}
        schema[("front",)] = (torch.uint8, (3, 64, 64))
        batch_from_bytes(batch_to_bytes(other, "png"), schema)
