import json

import pytest
import torch
from torchrl.collectors import Collector

from torchrl_serl.data.demos import check_same_keys, load_demos, record_demos, save_demos
from torchrl_serl.data.pixel_storage import FrameDedupReplayBuffer
from torchrl_serl.data.replay import OnlineDemoReplayBuffer
from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv
from torchrl_serl.envs.sim.scripted import ScriptedPickPolicy

META = dict(env_name="PandaPickCube-pixels", cameras=["front", "wrist"], action_scale_m=0.1, fps=10.0)


@pytest.fixture(scope="module")
def pixel_env():
    env = PandaPickCubeEnv(pixels=True, image_size=32, seed=0)
    yield env
    env.close()


@pytest.fixture(scope="module")
def scripted_demo(pixel_env):
    return record_demos(pixel_env, ScriptedPickPolicy(pixel_env), 1, max_steps=100)


def test_record_save_load_round_trip(tmp_path, scripted_demo):
    assert scripted_demo["next", "success"].any() and scripted_demo["next", "done"][-1]
    save_demos(tmp_path / "demos", scripted_demo, **META, operator="scripted")
    data, meta = load_demos(tmp_path / "demos", expected_keys=scripted_demo)
    assert (data == scripted_demo).all()
    assert data["front"].dtype == torch.uint8
    assert meta["env_name"] == "PandaPickCube-pixels" and meta["cameras"] == ["front", "wrist"]
    assert meta["action_scale_m"] == 0.1 and meta["fps"] == 10.0 and meta["operator"] == "scripted"
    assert meta["num_transitions"] == scripted_demo.shape[0] and meta["num_episodes"] == 1
    with pytest.raises(FileExistsError):
        save_demos(tmp_path / "demos", scripted_demo, **META)
    save_demos(tmp_path / "demos", scripted_demo[:5], **META, overwrite=True)
    assert load_demos(tmp_path / "demos")[0].shape == (5,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demos"]  # no temporary or old copies left


def test_sim_demos_and_collector_data_in_online_demo_buffer(tmp_path, pixel_env, scripted_demo):
    rb = OnlineDemoReplayBuffer(400, 200, pixel_keys=["front", "wrist"], scratch_dir=tmp_path, batch_size=64)
    rb.extend_demos(scripted_demo)
    collector = Collector(pixel_env, ScriptedPickPolicy(pixel_env, noise_std=0.3, generator=torch.Generator().manual_seed(0)),
                          frames_per_batch=40, total_frames=120, auto_register_policy_transforms=False)
    batches, rows = [], []
    for batch in collector:
        rows.append(rb.extend(batch))  # ("collector", "traj_ids") is dropped, so keys match the rollout demos
        batches.append(batch)
    collector.shutdown()
    online = torch.cat(batches)
    assert online["next", "done"].sum() == 1  # the 100-step episode ends inside the second batch
    # storage rows hold the transitions back exactly, next frames rebuilt from the following row;
    # 120 transitions take 122 rows: the episode end and the final batch end each leave a tail row
    rows = torch.cat(rows)
    assert len(rb.online_buffer) == 122 and rows.tolist() == list(range(100)) + list(range(101, 121))
    stored = rb.online_buffer.storage.get(rows)
    for key in ["front", "wrist", ("next", "front"), ("next", "wrist"), "action", ("next", "observation")]:
        assert torch.equal(stored[key], online[key]), key
    demo_rows = rb.demo_buffer.storage.get(torch.arange(scripted_demo.shape[0]))
    assert torch.equal(demo_rows["next", "wrist"], scripted_demo["next", "wrist"])
    s = rb.sample()
    assert s.batch_size == (64,) and s["next", "front"].shape == (64, 3, 32, 32)


def test_bytes_per_transition_at_128px_two_cameras(tmp_path):
    """One uint8 copy of two 128x128x3 frames per transition (98,304 B) instead of two (196,608 B)."""
    rb = FrameDedupReplayBuffer(1100, scratch_dir=tmp_path)
    for episode in range(10):  # ten 100-step episodes, written in collector-sized batches of 50
        for half in range(2):
            n = 50
            t = torch.arange(episode * 1000 + half * n, episode * 1000 + half * n + n)
            frames = lambda ids: (ids[:, None, None, None] % 251).to(torch.uint8).expand(len(ids), 3, 128, 128).clone()
            done = torch.zeros(n, 1, dtype=torch.bool)
            done[-1] = half == 1
            td = {"front": frames(t), "wrist": frames(t + 7), "observation": torch.zeros(n, 7), "action": torch.zeros(n, 4),
                  "next": {"front": frames(t + 1), "wrist": frames(t + 8), "observation": torch.zeros(n, 7),
                           "reward": torch.zeros(n, 1), "done": done}}
            from tensordict import TensorDict
            rb.extend(TensorDict(td, batch_size=[n]))
    per_transition = rb.bytes_per_transition()
    assert 98_304 < per_transition < 1.02 * 98_304 + 100, per_transition


def test_empty_corrupt_and_mismatched_demo_files(tmp_path, scripted_demo):
    with pytest.raises(ValueError, match="non-empty"):
        save_demos(tmp_path / "empty", scripted_demo[:0], **META)
    path = save_demos(tmp_path / "d", scripted_demo[:10], **META)
    meta = json.loads((path / "metadata.json").read_text())
    (path / "metadata.json").write_text(json.dumps({**meta, "num_transitions": 0}))
    with pytest.raises(ValueError, match="empty demo file"):
        load_demos(path)
    (path / "metadata.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt demo file .*not valid JSON"):
        load_demos(path)
    (path / "metadata.json").write_text(json.dumps(meta))
    next(path.glob("transitions/front.memmap")).write_bytes(b"\x00" * 10)  # truncated frames
    with pytest.raises(ValueError, match="corrupt demo file"):
        load_demos(path)
    with pytest.raises(FileNotFoundError):
        load_demos(tmp_path / "missing")
    path = save_demos(tmp_path / "ok", scripted_demo[:10], **META)
    with pytest.raises(ValueError, match=r"missing \['intervention'\]"):
        load_demos(path, expected_keys=[*meta["keys"], "intervention"])
    with pytest.raises(ValueError, match=r"unexpected \['wrist'\]"):
        check_same_keys(scripted_demo, scripted_demo.exclude("wrist"))
