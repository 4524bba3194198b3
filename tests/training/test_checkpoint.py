"""RunCheckpointer: full-state round trip, rotation, damaged checkpoints, killed saves."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.objectives import SoftUpdate
from torchrl.objectives.sac import SACLoss
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
from tensordict.nn import NormalParamExtractor, TensorDictModule

from torchrl_serl.training.checkpoint import CheckpointError, GracefulStop, RunCheckpointer


def _sac(seed):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(MLP(in_features=3, out_features=4, num_cells=[8]), NormalParamExtractor())
    actor = ProbabilisticActor(
        TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
    )
    qnet = ValueOperator(MLP(in_features=5, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    loss = SACLoss(actor, qnet, num_qvalue_nets=2, alpha_init=0.3, target_entropy=-1.0)
    loss.make_value_estimator(gamma=0.9)
    optim = torch.optim.Adam(loss.parameters(), lr=1e-2)
    return loss, optim


def _batch(n):
    return TensorDict(
        {
            "observation": torch.randn(n, 3),
            "action": torch.rand(n, 2) * 2 - 1,
            "next": {
                "observation": torch.randn(n, 3),
                "reward": torch.randn(n, 1),
                "done": torch.zeros(n, 1, dtype=torch.bool),
                "terminated": torch.zeros(n, 1, dtype=torch.bool),
            },
        },
        [n],
    )


def _step(loss, optim, batch):
    out = loss(batch)
    optim.zero_grad()
    (out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"]).backward()
    optim.step()


def _make(tmp_path, seed=0, keep_last=2):
    loss, optim = _sac(seed)
    target = SoftUpdate(loss, tau=0.1)
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(64), batch_size=8)
    ckpt = RunCheckpointer(tmp_path / "ckpt", keep_last=keep_last, loss=loss, optim=optim, buffer=rb)
    return loss, optim, target, rb, ckpt


def test_round_trip_restores_weights_targets_alpha_optimizer_buffer_and_rng(tmp_path):
    loss, optim, target, rb, ckpt = _make(tmp_path)
    rb.extend(_batch(20))
    for _ in range(3):
        _step(loss, optim, rb.sample())
        target.step()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    ckpt.save(20, updates=3)
    # what the uninterrupted run does next
    expected_rng = (random.random(), np.random.rand(), torch.rand(1))
    expected_sample = rb.sample()
    _step(loss, optim, expected_sample)
    expected_params = {k: v.clone() for k, v in loss.state_dict().items()}

    loss2, optim2, _, rb2, ckpt2 = _make(tmp_path, seed=123)
    assert not torch.equal(loss2.log_alpha, loss.log_alpha)
    info = ckpt2.resume()
    assert info.step == 20 and info.counters == {"updates": 3}
    assert len(rb2) == 20
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected_rng
    sample = rb2.sample()
    assert torch.equal(sample["observation"], expected_sample["observation"])
    _step(loss2, optim2, sample)
    for key, value in loss2.state_dict().items():
        torch.testing.assert_close(value, expected_params[key], msg=key)


def test_rotation_keeps_last_k_and_resume_picks_newest(tmp_path):
    loss, optim, _, rb, ckpt = _make(tmp_path, keep_last=2)
    for step in (10, 20, 30):
        rb.extend(_batch(5))
        ckpt.save(step)
    assert [p.name for p in ckpt.checkpoints()] == ["checkpoint-000000000020", "checkpoint-000000000030"]
    _, _, _, rb2, ckpt2 = _make(tmp_path)
    assert ckpt2.resume().step == 30 and len(rb2) == 15


def test_fresh_directory_resumes_nothing(tmp_path):
    *_, ckpt = _make(tmp_path)
    assert ckpt.resume() is None


def _corrupt_payload(path):
    victim = next(p for p in sorted(path.rglob("*.memmap")) if "loss" in str(p))
    victim.write_bytes(b"\x00")


def test_damaged_checkpoint_named_in_error_and_resume_falls_back(tmp_path):
    loss, optim, _, rb, ckpt = _make(tmp_path, keep_last=3)
    rb.extend(_batch(5))
    ckpt.save(10)
    rb.extend(_batch(5))
    newest = ckpt.save(20)
    _corrupt_payload(newest)

    _, _, _, rb2, ckpt2 = _make(tmp_path, keep_last=3)
    with pytest.raises(CheckpointError, match="checkpoint-000000000020"):
        ckpt2.load(newest)
    with pytest.warns(UserWarning, match="skipping checkpoint"):
        info = ckpt2.resume()
    assert info.step == 10 and len(rb2) == 5


def test_damaged_manifest_and_all_damaged(tmp_path):
    *_, ckpt = _make(tmp_path)
    path = ckpt.save(10)
    (path / "manifest.json").write_text("{ not json")
    *_, ckpt2 = _make(tmp_path)
    with pytest.raises(CheckpointError, match="no loadable checkpoint"), pytest.warns(UserWarning):
        ckpt2.resume()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="keep_last"):
        RunCheckpointer(tmp_path, keep_last=0)
    with pytest.raises(ValueError, match="reserved"):
        RunCheckpointer(tmp_path, rng=torch.nn.Linear(1, 1))
    *_, ckpt = _make(tmp_path)
    with pytest.raises(ValueError, match="step"):
        ckpt.save(-1)


def test_save_killed_midway_leaves_previous_checkpoint_loadable(tmp_path):
    # A child process saves once, then is SIGKILLed while writing a large second save.
    script = textwrap.dedent(
        f"""
        import os, signal, sys, threading, time, torch
        from torchrl_serl.training.checkpoint import RunCheckpointer
        big = torch.nn.Linear(2000, 2000)
        ckpt = RunCheckpointer({str(tmp_path / 'ckpt')!r}, keep_last=2, net=big)
        ckpt.save(1)
        with torch.no_grad():
            big.weight.add_(1.0)
        stage_seen = threading.Event()
        def killer():
            while not any('.stage-' in p for p in os.listdir({str(tmp_path / 'ckpt')!r})):
                time.sleep(0.0005)
            os.kill(os.getpid(), signal.SIGKILL)
        threading.Thread(target=killer, daemon=True).start()
        ckpt.save(2)
        print('save finished before the kill', flush=True)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    net = torch.nn.Linear(2000, 2000)
    ckpt = RunCheckpointer(tmp_path / "ckpt", keep_last=2, net=net)
    assert not any(".stage-" in p.name for p in (tmp_path / "ckpt").iterdir()), "stale stage not removed"
    info = ckpt.resume()
    assert info.step == 1
    assert float(net.weight.detach().abs().max()) < 1.0  # the pre-increment weights (Linear init is small)


def test_graceful_stop_finishes_the_step_then_exits_with_signal_status():
    steps = []
    with pytest.raises(SystemExit) as exit_info:
        with GracefulStop() as stop:
            for step in range(5):
                if step == 1:
                    os.kill(os.getpid(), signal.SIGTERM)
                steps.append(step)  # the step in flight completes
                if stop.requested:
                    break
    assert steps == [0, 1] and exit_info.value.code == 128 + signal.SIGTERM
    # a second signal does not wait for the loop
    with pytest.raises(KeyboardInterrupt):
        with GracefulStop():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass


def test_online_demo_buffer_saved_through_its_own_save_load(tmp_path):
    from torchrl_serl.data.replay import OnlineDemoReplayBuffer

    def make():
        return OnlineDemoReplayBuffer(64, 64, batch_size=8, scratch_dir=tmp_path / f"rb{len(list(tmp_path.iterdir()))}", seed=3)

    rb = make()
    rb.extend_demos(_batch(10))
    rb.extend(_batch(7))
    ckpt = RunCheckpointer(tmp_path / "ckpt", buffer=rb)
    ckpt.save(7)
    expected = rb.sample()
    rb2 = make()
    RunCheckpointer(tmp_path / "ckpt", buffer=rb2).resume()
    assert len(rb2.demo_buffer) == 10
    torch.testing.assert_close(rb2.sample()["observation"], expected["observation"])


def test_terminate_as_interrupt_runs_finally():
    from torchrl_serl.training.checkpoint import terminate_as_interrupt

    ran = []
    with pytest.raises(KeyboardInterrupt):
        with terminate_as_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):
                    pass
            finally:
                ran.append(True)
    assert ran == [True]


class _RunsCode:
    """Unpickling this touches ``marker``: the stand-in for an attacker's payload."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _republish_integrity(path):
    # An attacker who can replace a file can rewrite integrity.json too: it detects damage, not tampering.
    from torchrl_serl.training.checkpoint import _INTEGRITY, _inventory

    (path / _INTEGRITY).write_text(json.dumps(_inventory(path)))


def test_replaced_prefetch_pickle_is_refused_on_resume_without_running_it(tmp_path):
    import pickle

    from torchrl_serl.data.safe_loading import UnsafeFileError

    loss, optim, _, rb, ckpt = _make(tmp_path)
    rb.extend(_batch(5))
    path = ckpt.save(5)
    prefetch = next(path.rglob("prefetch.pkl"))
    marker = tmp_path / "ran"
    prefetch.write_bytes(pickle.dumps({"version": 1, "queue": [_RunsCode(marker)]}))
    _republish_integrity(path)
    *_, ckpt2 = _make(tmp_path)
    with pytest.raises(UnsafeFileError, match="prefetch.pkl holds pickled objects"):
        ckpt2.resume()  # not skipped with a warning: a tampered checkpoint needs the user
    assert not marker.exists(), "resume unpickled the replaced prefetch.pkl"


def test_non_tensor_state_field_is_refused_without_running_it(tmp_path):
    from tensordict import NonTensorData

    from torchrl_serl.data.safe_loading import UnsafeFileError

    *_, ckpt = _make(tmp_path)
    path = ckpt.save(5)
    state_dir = next(p.parent for p in path.rglob("meta.json") if p.parent.name == "state" and "loss" in str(p))
    marker = tmp_path / "ran"
    state = TensorDict.load_memmap(state_dir).clone()
    state["payload"] = NonTensorData(_RunsCode(marker))
    import shutil

    shutil.rmtree(state_dir)
    state.memmap(state_dir)
    _republish_integrity(path)
    *_, ckpt2 = _make(tmp_path)
    with pytest.raises(UnsafeFileError, match="'payload'.*NonTensorData"):
        ckpt2.load(path)
    assert not marker.exists()


def _buffer_run(tmp_path, capacity):
    from torchrl.data import LazyMemmapStorage

    scratch = tmp_path / f"scratch{len(list(tmp_path.glob('scratch*')))}"
    rb = TensorDictReplayBuffer(storage=LazyMemmapStorage(capacity, scratch_dir=scratch), batch_size=8)
    return rb, RunCheckpointer(tmp_path / "ckpt", buffer=rb)


def test_buffer_checkpoint_writes_filled_rows_and_names_the_capacity_option(tmp_path):
    rb, ckpt = _buffer_run(tmp_path, 100_000)
    rb.extend(_batch(600))
    path = ckpt.save(600)
    on_disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    row_bytes = (3 + 2 + 3 + 1) * 4 + 2  # float32 obs, action, next obs, reward; two bools
    assert on_disk < 600 * row_bytes * 1.5 + 100_000, on_disk  # 600 rows, not 100,000
    rb2, ckpt2 = _buffer_run(tmp_path, 100_000)
    assert ckpt2.resume().step == 600 and len(rb2) == 600
    assert torch.equal(rb2.storage.get(torch.arange(600))["observation"], rb.storage.get(torch.arange(600))["observation"])
    from torchrl_serl.data.storage_checkpointer import BufferCapacityError

    _, ckpt3 = _buffer_run(tmp_path, 250)
    with pytest.raises(BufferCapacityError, match=r"capacity 100000 \(600 rows filled\).*capacity 250.*--buffer_size 100000"):
        ckpt3.resume()  # a settings mismatch, not damage: no fall back to older checkpoints
