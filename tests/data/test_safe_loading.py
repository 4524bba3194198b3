"""Hostile files never run code: demo folders, replay checkpoints and storage rows load tensors only."""

import json
import pathlib
import pickle
import shutil

import pytest
import torch
from tensordict import NonTensorData, TensorDict
from torchrl.data import LazyMemmapStorage, TensorDictReplayBuffer

from ted_factory import transitions
from torchrl_serl.data.safe_loading import UnsafeFileError, check_plain_pickle, load_tensor_memmap
from torchrl_serl.data.storage_checkpointer import BufferCapacityError, FilledRowsCheckpointer
from torchrl_serl.data.demos import load_demos, save_demos
from torchrl_serl.data.replay import OnlineDemoReplayBuffer

META = dict(env_name="test", cameras=[], action_scale_m=0.1, fps=10.0)


class RunsCode:
    """Unpickling this touches ``marker``: the stand-in for an attacker's payload."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _hostile_memmap(td_dir, marker, n):
    """Add a pickled non-tensor field to the memory-mapped TensorDict at ``td_dir``, in place."""
    td = TensorDict.load_memmap(td_dir).clone()
    td["payload"] = NonTensorData(RunsCode(marker), batch_size=[n])
    shutil.rmtree(td_dir)
    td.memmap(td_dir)
    assert any(td_dir.rglob("*.pickle"))  # the field really is a pickle sidecar


def test_demo_folder_with_a_pickled_field_is_refused_without_running_it(tmp_path):
    path = save_demos(tmp_path / "demos", transitions(1, 8, done_at=7, pixels=False), **META)
    marker = tmp_path / "ran"
    _hostile_memmap(path / "transitions", marker, 8)
    with pytest.raises(UnsafeFileError, match="'payload' .* is a NonTensorData, not a tensor"):
        load_demos(path)
    assert not marker.exists(), "loading the demo folder ran the pickled payload"


def test_save_demos_refuses_non_tensor_fields(tmp_path):
    data = transitions(1, 4, done_at=3, pixels=False)
    data["note"] = NonTensorData("operator A", batch_size=[4])
    with pytest.raises(TypeError, match="must be tensors.*note"):
        save_demos(tmp_path / "demos", data, **META)


def test_plain_pickle_check_reads_opcodes_only(tmp_path):
    plain, hostile, marker = tmp_path / "plain.pkl", tmp_path / "hostile.pkl", tmp_path / "ran"
    plain.write_bytes(pickle.dumps({"queue": [], "capacity": 3, "none": None}))
    hostile.write_bytes(pickle.dumps({"queue": [RunsCode(marker)]}))
    check_plain_pickle(plain, "test")
    with pytest.raises(UnsafeFileError, match="holds pickled objects"):
        check_plain_pickle(hostile, "test")
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04junk")
    with pytest.raises(UnsafeFileError, match="not a readable pickle"):
        check_plain_pickle(tmp_path / "junk.pkl", "test")
    assert not marker.exists()


def _buffer(tmp_path, capacity, name):
    return TensorDictReplayBuffer(storage=LazyMemmapStorage(capacity, scratch_dir=tmp_path / name),
                                  checkpointer=FilledRowsCheckpointer(), batch_size=4)


def test_filled_rows_checkpoint_refuses_hostile_rows_and_other_capacities(tmp_path):
    rb = _buffer(tmp_path, 100, "a")
    rb.extend(transitions(1, 30, pixels=False))
    rb.dumps(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "storage" / "storage_metadata.json").read_text()) == {"len": 30, "max_size": 100}
    with pytest.raises(BufferCapacityError, match=r"capacity 100 \(30 rows filled\).*capacity 250.*--buffer_size 100"):
        _buffer(tmp_path, 250, "b").loads(tmp_path / "ckpt")
    restored = _buffer(tmp_path, 100, "c")
    restored.loads(tmp_path / "ckpt")
    assert len(restored) == 30
    marker = tmp_path / "ran"
    _hostile_memmap(tmp_path / "ckpt" / "storage" / "rows", marker, 30)
    with pytest.raises(UnsafeFileError, match="NonTensorData"):
        _buffer(tmp_path, 100, "d").loads(tmp_path / "ckpt")
    assert not marker.exists()


def test_tensor_memmap_loader_refuses_stray_files(tmp_path):
    TensorDict({"a": torch.zeros(3)}, [3]).memmap(tmp_path / "td")
    assert load_tensor_memmap(tmp_path / "td", "test")["a"].shape == (3,)
    (tmp_path / "td" / "a.pt").write_bytes(b"")
    with pytest.raises(UnsafeFileError, match=r"a\.pt is not a tensor file"):
        load_tensor_memmap(tmp_path / "td", "test")


def _saved_online_demo_buffer(tmp_path):
    rb = OnlineDemoReplayBuffer(200, 100, scratch_dir=tmp_path / "rb", batch_size=8)
    rb.extend_demos(transitions(1, 20, done_at=19, pixels=False, sign=-1.0))
    rb.extend(transitions(100, 10, pixels=False))
    return rb.save(tmp_path / "ckpt")


def test_replaced_prefetch_pickle_is_refused_without_running_it(tmp_path):
    version = _saved_online_demo_buffer(tmp_path)
    marker = tmp_path / "ran"
    (version / "online" / "prefetch.pkl").write_bytes(pickle.dumps({"queue": [RunsCode(marker)]}))
    with pytest.raises(UnsafeFileError, match="prefetch.pkl holds pickled objects"):
        OnlineDemoReplayBuffer(200, 100, scratch_dir=tmp_path / "r", batch_size=8).load(tmp_path / "ckpt")
    assert not marker.exists(), "TorchRL's loads() unpickled the replaced prefetch.pkl"


def test_replaced_transform_state_is_refused_by_weights_only_load(tmp_path):
    from torchrl_serl.envs.transforms.random_shift import RandomShift

    rb = OnlineDemoReplayBuffer(200, 100, scratch_dir=tmp_path / "rb", batch_size=8, transform=RandomShift(["observation"]))
    rb.extend_demos(transitions(1, 20, done_at=19, pixels=False, sign=-1.0))
    version = rb.save(tmp_path / "ckpt")
    marker = tmp_path / "ran"
    torch.save({"generator": RunsCode(marker)}, version / "transform.pt")
    restored = OnlineDemoReplayBuffer(200, 100, scratch_dir=tmp_path / "r", batch_size=8, transform=RandomShift(["observation"]))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        restored.load(tmp_path / "ckpt")
    assert not marker.exists()


def test_online_demo_buffer_of_another_capacity_names_the_option(tmp_path):
    _saved_online_demo_buffer(tmp_path)
    with pytest.raises(BufferCapacityError, match=r"capacity=200, this buffer has 500.*--buffer_size"):
        OnlineDemoReplayBuffer(500, 100, scratch_dir=tmp_path / "r", batch_size=8).load(tmp_path / "ckpt")


def test_pretrained_pickle_needs_trust_pickle_and_hostile_ones_never_run(tmp_path):
    # --drq.pretrained_path x.pkl reaches load_pretrained: a planted pickle must not run.
    from torchrl_serl.modules.encoders import MultiCameraEncoder
    from torchrl_serl.modules.encoders.flax_convert import to_serl_resnet10
    from torchrl_serl.modules.encoders.resnet import resnet10

    marker = tmp_path / "ran"
    hostile = tmp_path / "resnet10_params.pkl"
    hostile.write_bytes(pickle.dumps({"conv_init": RunsCode(marker)}))
    enc = MultiCameraEncoder(resnet10(), camera_keys=("front",), image_size=64)
    with pytest.raises(PermissionError, match="trust_pickle=True"):
        enc.load_pretrained(hostile)
    assert not marker.exists()
    trusted = tmp_path / "serl_release.pkl"
    source = resnet10()
    trusted.write_bytes(pickle.dumps(to_serl_resnet10(source.state_dict())))
    enc.load_pretrained(trusted, trust_pickle=True)  # the user vouches for this file
    assert torch.equal(enc.trunk("front").conv_init.weight, source.conv_init.weight)


def test_torchrl_full_storage_checkpoints_still_load(tmp_path):
    # Runs saved before RunCheckpointer switched buffers to FilledRowsCheckpointer keep resuming.
    old = TensorDictReplayBuffer(storage=LazyMemmapStorage(100, scratch_dir=tmp_path / "a"), batch_size=4)
    old.extend(transitions(1, 30, pixels=False))
    old.dumps(tmp_path / "ckpt")
    restored = _buffer(tmp_path, 100, "b")
    restored.loads(tmp_path / "ckpt")
    assert len(restored) == 30
    assert torch.equal(restored.storage.get(torch.arange(30))["observation"], old.storage.get(torch.arange(30))["observation"])
    with pytest.raises(BufferCapacityError, match="capacity 100 .*--buffer_size 100"):
        _buffer(tmp_path, 250, "c").loads(tmp_path / "ckpt")
