import queue

import pytest
import torch
from torchrl.collectors import Collector
from torchrl.envs import TransformedEnv

from torchrl_serl.data.intervention_router import InterventionRouter
from torchrl_serl.data.replay import OnlineDemoReplayBuffer
from torchrl_serl.envs.input_devices.keyboard import KeyboardSource
from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv
from torchrl_serl.envs.transforms.intervention import Intervention

HUMAN_STEPS = {3, 4, 5, 11, 20, 21}


def test_collector_interventions_routed_to_demos_with_exact_frames(tmp_path):
    keys = queue.Queue()
    env = TransformedEnv(PandaPickCubeEnv(pixels=True, image_size=32, seed=0), Intervention(KeyboardSource(keys)))
    step = {"n": 0}

    def policy(td):
        if step["n"] in HUMAN_STEPS:
            keys.put("r")  # the operator lifts the arm at these steps
        step["n"] += 1
        return td.set("action", torch.tensor([0.2, 0.0, -0.2, 0.0]))

    rb = OnlineDemoReplayBuffer(100, 100, pixel_keys=["front", "wrist"], scratch_dir=tmp_path, batch_size=16)
    router = InterventionRouter(rb)
    collector = Collector(env, policy, frames_per_batch=12, total_frames=24, auto_register_policy_transforms=False)
    step["n"] = 0  # the collector runs the policy once while building its buffers
    data = []
    for batch in collector:
        router.extend(batch)
        data.append(batch)
    collector.shutdown()
    data = torch.cat(data)
    flagged = data["next", "intervention"].squeeze(-1)
    assert flagged.nonzero().squeeze(-1).tolist() == sorted(HUMAN_STEPS)
    assert router.num_routed == len(HUMAN_STEPS)
    torch.testing.assert_close(data["action"][flagged], torch.tensor([[0.0, 0, 1, 0]]).expand(6, 4))
    # the demo side holds exactly the human transitions; runs 3-5, 11 and 20-21 each end with a tail row
    assert len(rb.demo_buffer) == len(HUMAN_STEPS) + 3
    valid = rb.demo_buffer.storage._storage["_has_next_frame"][: len(rb.demo_buffer)]
    demos = rb.demo_buffer.storage.get(valid.nonzero().squeeze(-1))
    expected = data[flagged]
    for key in ["front", ("next", "front"), ("next", "wrist"), "action", ("next", "observation")]:
        assert torch.equal(demos[key], expected[key]), key
    assert len(rb.online_buffer) == 24 + 1  # one segment across both batches, one tail row
    s = rb.sample()
    assert s.batch_size == (16,) and "policy_action" not in s.keys()  # Intervention's entries are not stored
    torch.testing.assert_close(s["action"][:8], torch.tensor([[0.0, 0, 1, 0]]).expand(8, 4))  # the demo half: human


def test_scripted_demos_and_intervened_online_data_share_one_layout(tmp_path):
    from torchrl_serl.data.demos import record_demos
    from torchrl_serl.envs.sim.scripted import ScriptedPickPolicy

    base = PandaPickCubeEnv(seed=0, max_episode_steps=10)
    demos = record_demos(base, ScriptedPickPolicy(base), 1, success_key=None)  # no Intervention transform
    keys = queue.Queue()
    env = TransformedEnv(base, Intervention(KeyboardSource(keys)))
    rb = OnlineDemoReplayBuffer(50, 50, scratch_dir=tmp_path, batch_size=8)
    rb.extend_demos(demos)
    keys.put("w")
    n = InterventionRouter(rb).extend(env.rollout(5, lambda td: td.set("action", torch.zeros(4))))
    assert n == 1 and len(rb.demo_buffer) == 11 and len(rb.online_buffer) == 5
    assert rb.sample().batch_size == (8,)
    env.close()


def test_router_needs_the_flag(tmp_path):
    rb = OnlineDemoReplayBuffer(10, 10, scratch_dir=tmp_path)
    from tensordict import TensorDict

    with pytest.raises(KeyError, match="Intervention transform"):
        InterventionRouter(rb).extend(TensorDict(action=torch.zeros(3, 4), batch_size=[3]))
