import os
import subprocess
import sys
import textwrap

import pytest
import torch

from ted_factory import decode, transitions
from torchrl_serl.data import replay as replay_module
from torchrl_serl.data.pixel_storage import FrameDedupReplayBuffer
from torchrl_serl.data.replay import OnlineDemoReplayBuffer
from torchrl_serl.envs.transforms.random_shift import RandomShift


def _filled(tmp_path, pixels=False, **kwargs):
    rb = OnlineDemoReplayBuffer(200, 100, pixel_keys=["front", "wrist"] if pixels else (), scratch_dir=tmp_path / "rb", **kwargs)
    rb.extend_demos(transitions(1, 50, done_at=49, pixels=pixels, sign=-1.0))
    rb.extend(transitions(1000, 60, done_at=29, pixels=pixels))
    return rb


@pytest.mark.parametrize("fraction, batch", [(0.5, 256), (0.25, 64), (0.5, 7)])
def test_exact_demo_fraction_every_batch(tmp_path, fraction, batch):
    rb = _filled(tmp_path, demo_fraction=fraction, batch_size=batch)
    n_demo = round(fraction * batch)
    for _ in range(5):
        s = rb.sample()
        is_demo = s["observation"][:, 0] < 0
        assert s.batch_size == (batch,)
        assert is_demo[:n_demo].all() and not is_demo[n_demo:].any()


def test_collector_shaped_batches_are_flattened(tmp_path):
    rb = _filled(tmp_path, batch_size=32)
    rb.extend(torch.stack([transitions(3000, 10, pixels=False), transitions(4000, 10, pixels=False)]))
    assert len(rb.online_buffer) == 60 + 20
    ids = set(rb.sample(4000)["observation"][2000:, 0].long().tolist())
    assert set(range(3000, 3010)) | set(range(4000, 4010)) <= ids


def test_interventions_appended_to_demos_during_training(tmp_path):
    rb = _filled(tmp_path, batch_size=64)
    n = len(rb.demo_buffer)
    rb.extend_demos(transitions(5000, 10, pixels=False, sign=-1.0))
    assert len(rb.demo_buffer) == n + 10
    ids = set((-rb.sample(2000)["observation"][:1000, 0]).long().tolist())
    assert ids & set(range(5000, 5010))


def test_pixel_next_frames_rebuilt_exactly_and_stored_once(tmp_path):
    rb = FrameDedupReplayBuffer(120, scratch_dir=tmp_path, generator=torch.Generator().manual_seed(0))
    # two collector batches of one trajectory (the second continues the first), an episode end inside,
    # a second env, then enough data to wrap the circular storage several times
    rb.extend(transitions(0, 25))
    rb.extend(transitions(25, 25, done_at=9))
    rb.extend(torch.stack([transitions(1000, 20), transitions(2000, 20)]))
    for k in range(6):
        rb.extend(transitions(10_000 + 40 * k, 40, done_at=39))
    s = rb.sample(3000)
    step = s["observation"][:, 0].long()
    for cam, key in enumerate(["front", "wrist"]):
        assert torch.equal(decode(s[key]), step)
        assert torch.equal(decode(s["next", key]), step + 1)
        assert (s["next", key][:, 1] == cam).all()
    assert torch.equal(s["next", "observation"][:, 0].long(), step + 1)
    assert "_has_next_frame" not in s.keys()
    # one frame copy per transition (+ one tail row per 40-step episode) instead of two
    frame_bytes = 2 * 3 * 8 * 8
    assert rb.bytes_per_transition() < 1.2 * frame_bytes + 200


def test_continuation_overwrites_tail_row_and_filtered_subsets_split(tmp_path):
    rb = FrameDedupReplayBuffer(100, scratch_dir=tmp_path)
    rb.extend(transitions(0, 10))
    rb.extend(transitions(10, 10))
    assert len(rb) == 21 and rb.num_transitions == 20  # one tail: the continuation reused the first tail row
    row = rb[3]  # plain indexing rebuilds the next frames too
    assert decode(row["front"][None]).item() == 3 and decode(row["next", "front"][None]).item() == 4
    assert decode(rb[2:5]["next", "wrist"]).tolist() == [3, 4, 5]
    assert set(rb.sample(500)["observation"][:, 0].long().tolist()) == set(range(20))
    subset = transitions(100, 10)[torch.tensor([0, 1, 2, 5, 6, 9])]  # three non-adjacent runs
    rb.extend(subset)
    assert len(rb) == 21 + 6 + 3
    s = rb.sample(500)  # the new rows are sampleable right after the write
    assert set(s["observation"][:, 0].long().tolist()) == set(range(20)) | {100, 101, 102, 105, 106, 109}
    assert torch.equal(decode(s["next", "front"]), s["observation"][:, 0].long() + 1)


def test_bad_input_errors(tmp_path):
    rb = _filled(tmp_path)
    with pytest.raises(ValueError, match=r"missing \['next.reward'\]"):
        rb.extend(transitions(0, 5, pixels=False).exclude(("next", "reward")))
    small = transitions(0, 5, pixels=False)
    small.set("observation", small["observation"][:, :3])
    with pytest.raises(ValueError, match=r"observation: \[3\] float32 \(buffer has \[7\] float32\)"):
        rb.extend_demos(small)
    empty = OnlineDemoReplayBuffer(10, 10, scratch_dir=tmp_path / "e")
    empty.extend(transitions(0, 5, pixels=False))
    with pytest.raises(RuntimeError, match="demo buffer is empty"):
        empty.sample(4)
    with pytest.raises(ValueError, match="demo_fraction"):
        OnlineDemoReplayBuffer(10, 10, demo_fraction=1.5)
    pix = FrameDedupReplayBuffer(10, scratch_dir=tmp_path / "p")
    bad = transitions(0, 3)
    bad.set("front", bad["front"].float())
    with pytest.raises(TypeError, match="uint8"):
        pix.extend(bad)
    with pytest.raises(KeyError, match="wrist"):
        pix.extend(transitions(0, 3).exclude(("next", "wrist")))


@pytest.mark.parametrize("pixels", [False, True])
def test_checkpoint_round_trip_same_samples_after_restore(tmp_path, pixels):
    shift = RandomShift(["front", "wrist"], generator=torch.Generator().manual_seed(5)) if pixels else None
    rb = _filled(tmp_path, pixels=pixels, batch_size=32, transform=shift)
    rb.sample()
    rb.save(tmp_path / "ckpt")
    expected = [rb.sample() for _ in range(3)]
    more = transitions(7000, 5, pixels=pixels)
    rb.extend(more.clone())
    expected_after_write = rb.sample(300)

    shift2 = RandomShift(["front", "wrist"], generator=torch.Generator().manual_seed(99)) if pixels else None
    restored = OnlineDemoReplayBuffer(200, 100, pixel_keys=["front", "wrist"] if pixels else (), scratch_dir=tmp_path / "rb2",
                                      batch_size=8, transform=shift2, seed=123)
    restored.load(tmp_path / "ckpt")
    for e in expected:
        assert (restored.sample() == e).all()
    restored.extend(more.clone())  # the write cursor was restored too
    assert (restored.sample(300) == expected_after_write).all()


def test_interrupted_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    rb = _filled(tmp_path, batch_size=16)
    rb.save(tmp_path / "ckpt")
    before = len(rb.online_buffer)
    rb.extend(transitions(9000, 30, pixels=False))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(rb.demo_buffer, "dumps", crash)  # the online side is already written by then
    with pytest.raises(OSError, match="disk full"):
        rb.save(tmp_path / "ckpt")
    restored = OnlineDemoReplayBuffer(200, 100, scratch_dir=tmp_path / "r")
    restored.load(tmp_path / "ckpt")
    assert len(restored.online_buffer) == before and len(restored.demo_buffer) == 50
    monkeypatch.undo()
    rb.save(tmp_path / "ckpt")  # the next save succeeds and clears the partial write
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["LATEST", "v000002"]


def test_process_killed_mid_save_leaves_previous_checkpoint_loadable(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from ted_factory import transitions
        from torchrl_serl.data import replay
        rb = replay.OnlineDemoReplayBuffer(200, 100, pixel_keys=["front", "wrist"], scratch_dir={str(tmp_path / "rb")!r})
        rb.extend_demos(transitions(1, 20, sign=-1.0))
        rb.extend(transitions(100, 10))
        rb.save({str(tmp_path / "ckpt")!r})
        rb.extend(transitions(200, 50))
        replay.fsync_tree = lambda root: os._exit(9)  # die after the data is written, before publishing
        rb.save({str(tmp_path / "ckpt")!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr[-2000:]
    restored = OnlineDemoReplayBuffer(200, 100, pixel_keys=["front", "wrist"], scratch_dir=tmp_path / "r")
    restored.load(tmp_path / "ckpt")
    assert len(restored.online_buffer) == 11 and len(restored.demo_buffer) == 21  # transitions + one tail row
    s = restored.sample(64)
    assert torch.equal(decode(s["next", "front"]).abs(), s["observation"][:, 0].long().abs() + 1)
    with pytest.raises(FileNotFoundError, match="LATEST"):
        restored.load(tmp_path / "nowhere")


def test_checkpoint_writes_only_the_rows_in_use(tmp_path):
    rb = OnlineDemoReplayBuffer(20_000, 100, pixel_keys=["front", "wrist"], scratch_dir=tmp_path / "rb")
    rb.extend_demos(transitions(1, 50, sign=-1.0))
    rb.extend(transitions(1000, 100))
    version = rb.save(tmp_path / "ckpt")
    on_disk = sum(f.stat().st_size for f in (version / "online").rglob("*") if f.is_file())
    row_bytes = 2 * 3 * 8 * 8 + 200  # two frames and the low-dimensional entries, roughly
    assert on_disk < 101 * row_bytes * 1.5  # 101 rows written, not 20,000
    restored = OnlineDemoReplayBuffer(20_000, 100, pixel_keys=["front", "wrist"], scratch_dir=tmp_path / "r")
    restored.load(tmp_path / "ckpt")
    assert len(restored.online_buffer) == 101
    assert (restored.online_buffer.storage.get(torch.arange(101)) == rb.online_buffer.storage.get(torch.arange(101))).all()


@pytest.mark.parametrize("pixels", [False, True])
def test_prefetch_draws_the_batches_of_a_buffer_written_one_step_later(tmp_path, pixels):
    """With prefetch, batch k+1 is drawn as sample k returns: a write in between reaches batch k+2
    (deterministically: writes wait for the draw in flight), and with no writes the sequence is
    the plain buffer's."""
    torch.manual_seed(0)  # the same random transitions in both
    plain = _filled(tmp_path / "plain", pixels=pixels, batch_size=500)
    torch.manual_seed(0)
    ahead = _filled(tmp_path / "ahead", pixels=pixels, batch_size=500, prefetch=True)
    for _ in range(3):
        assert (ahead.sample() == plain.sample()).all()
    ahead.extend(transitions(7000, 10, pixels=pixels))
    ids = lambda batch: set(batch["observation"][250:, 0].long().tolist())  # noqa: E731 - the online half
    assert not ids(ahead.sample()) & set(range(7000, 7010))  # drawn before the write
    assert ids(ahead.sample()) & set(range(7000, 7010))
    small = ahead.sample(8)  # another size: a fresh draw, still half demos
    assert small.batch_size == (8,) and (small["observation"][:4, 0] < 0).all()


def test_prefetch_is_discarded_by_a_restore(tmp_path):
    rb = _filled(tmp_path, batch_size=32, prefetch=True)
    rb.sample()
    rb.save(tmp_path / "ckpt")  # waits for the draw in flight
    restored = OnlineDemoReplayBuffer(200, 100, scratch_dir=tmp_path / "rb2", batch_size=32, prefetch=True)
    restored.extend_demos(transitions(9000, 40, done_at=39, pixels=False, sign=-1.0))
    restored.extend(transitions(9100, 40, done_at=39, pixels=False))
    restored.sample()  # a batch of these contents is now in flight: the restore must not hand it out
    restored.load(tmp_path / "ckpt")
    plain = OnlineDemoReplayBuffer(200, 100, scratch_dir=tmp_path / "rb3", batch_size=32)
    plain.load(tmp_path / "ckpt")
    assert (restored.sample() == plain.sample()).all()
