"""Replay-buffer factories: a memory-mapped buffer restarts in the scratch folder a killed run left behind."""
import pytest
import torch
from tensordict import TensorDict

from torchrl_serl.data.replay_factory import make_pixel_replay_buffer, make_replay_buffer


def _transitions(n: int, seed: int) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    return TensorDict(
        front=torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g),
        action=torch.randn(n, 4, generator=g),
        next=TensorDict(
            front=torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g),
            done=torch.zeros(n, 1, dtype=torch.bool),
            batch_size=[n],
        ),
        batch_size=[n],
    )


@pytest.mark.parametrize("builder", ["plain", "pixel"])
def test_buffer_restarts_in_a_killed_runs_scratch_dir_from_its_checkpoint(tmp_path, builder):
    def make():
        if builder == "plain":
            return make_replay_buffer(64, 4, scratch_dir=tmp_path / "replay")
        return make_pixel_replay_buffer(64, 4, tmp_path / "replay", pixel_keys=("front",))

    buffer = make()
    data = _transitions(10, 0)
    buffer.extend(data)
    buffer.dumps(tmp_path / "checkpoint")
    assert any((tmp_path / "replay").rglob("*.memmap"))  # what a killed run leaves behind

    resumed = make()  # same scratch folder: stale memmaps must not block the restart
    resumed.loads(tmp_path / "checkpoint")
    n = len(buffer)  # rows: the pixel buffer adds a tail row per trajectory segment
    assert len(resumed) == n >= 10
    for key in ("action", "front", ("next", "front")):
        torch.testing.assert_close(resumed[:n][key], buffer[:n][key])
    assert torch.equal(buffer[:n]["action"][:1], data["action"][:1])


def test_scratch_dir_holding_other_files_is_refused_not_deleted(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not replay working memory"):
        make_replay_buffer(64, 4, scratch_dir=run)
    assert (run / "config.json").is_file()
