"""PickCube envs: specs, seeding, rewards, clipping, input validation."""

import math

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from torchrl_serl.envs import PandaPickCubeEnv, PiperPickCubeEnv, ScriptedPickPolicy

ENVS = [PandaPickCubeEnv, PiperPickCubeEnv]


@pytest.fixture
def close_after():
    envs = []
    yield envs.append
    for env in envs:
        env.close()


@pytest.mark.parametrize("cls", ENVS)
@pytest.mark.parametrize("pixels", [False, True])
def test_check_env_specs(cls, pixels, close_after):
    env = cls(pixels=pixels, seed=0, image_size=64 if pixels else 128)
    close_after(env)
    check_env_specs(env, seed=0)
    td = env.reset()
    assert td["observation"].shape == (7 if pixels else 10,)
    assert td["observation"].dtype == torch.float32
    if pixels:
        for key in ("front", "wrist"):
            assert td[key].shape == (3, 64, 64) and td[key].dtype == torch.uint8
            assert td[key].float().std() > 1.0  # a rendered scene, not a blank frame
    else:
        assert "front" not in td.keys()


def test_camera_keys_select_the_rendered_cameras(close_after):
    env = PandaPickCubeEnv(pixels=True, camera_keys=("wrist",), image_size=32)
    close_after(env)
    td = env.reset()
    assert "wrist" in td.keys() and "front" not in td.keys()


def _random_rollout(env, seed, steps=8):
    env.set_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    td = env.reset()
    obs = [td["observation"]]
    for _ in range(steps):
        td["action"] = torch.rand(4, generator=gen) * 2 - 1
        td = env.step(td)["next"]
        obs.append(td["observation"])
    return torch.stack(obs)


@pytest.mark.parametrize("cls", ENVS)
def test_seeding_makes_rollouts_reproducible(cls):
    env = cls()
    a, b = _random_rollout(env, 3), _random_rollout(env, 3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = _random_rollout(env, 4)
    assert not torch.allclose(a[0, :3], c[0, :3])  # another seed puts the cube elsewhere


def test_reset_distribution_matches_serl():
    env = PandaPickCubeEnv(seed=0)
    cubes = np.stack([env.reset()["observation"][:3].numpy() for _ in range(30)])
    assert np.all(cubes[:, 0] >= 0.25) and np.all(cubes[:, 0] <= 0.55)
    assert np.all(cubes[:, 1] >= -0.25) and np.all(cubes[:, 1] <= 0.25)
    np.testing.assert_allclose(cubes[:, 2], 0.02, atol=1e-3)
    assert cubes[:, 0].std() > 0.05 and cubes[:, 1].std() > 0.05
    tcp = env.reset()["observation"][4:7].numpy()
    np.testing.assert_allclose(tcp, [0.307, 0.0, 0.487], atol=3e-3)


@pytest.mark.parametrize("cls", ENVS)
def test_scripted_grasp_lifts_cube_dense_and_sparse_rewards(cls):
    dense = cls(seed=1)
    sparse = cls(seed=1, reward_type="sparse")
    policy = ScriptedPickPolicy()
    td_d = dense.rollout(40, policy)
    td_s = sparse.rollout(40, policy)
    success = td_d["next", "success"].squeeze(-1)
    assert success.any(), "the scripted grasp should lift the cube"
    # same seed and same deterministic policy -> same trajectory, only the reward differs
    torch.testing.assert_close(td_d["next", "observation"], td_s["next", "observation"])
    torch.testing.assert_close(td_s["next", "reward"].squeeze(-1), success.float())
    # dense reward recomputed from the observation: 0.3 exp(-20 |block - tcp|) + 0.7 clip(lift / 0.2)
    obs = td_d["next", "observation"]
    z0 = td_d["observation"][0, 2]
    block, tcp = obs[:, 0:3], obs[:, 4:7]
    expected = 0.3 * torch.exp(-20 * (block - tcp).norm(dim=-1)) + 0.7 * ((block[:, 2] - z0) / 0.2).clamp(0, 1)
    torch.testing.assert_close(td_d["next", "reward"].squeeze(-1), expected, atol=1e-5, rtol=0)
    lift = block[:, 2] - z0
    assert torch.equal(success, lift > 0.1)
    assert td_d["next", "reward"].max() > 0.8
    # SERL does not end the episode on success
    assert not td_d["next", "terminated"].any()


def test_terminate_on_success_and_truncation():
    env = PandaPickCubeEnv(seed=1, terminate_on_success=True, max_episode_steps=60)
    td = env.rollout(60, ScriptedPickPolicy())
    assert td["next", "terminated"][-1] and td["next", "success"][-1] and td["next", "done"][-1]
    assert td.shape[0] < 60
    env = PandaPickCubeEnv(seed=0, max_episode_steps=5)
    td = env.rollout(20)
    assert td.shape[0] == 5
    assert td["next", "truncated"][-1] and td["next", "done"][-1] and not td["next", "terminated"][-1]
    assert not td["next", "done"][:-1].any()


@pytest.mark.parametrize("cls", ENVS)
def test_target_is_clipped_to_the_task_box(cls):
    env = cls(seed=0)
    env.reset()
    high = np.array(env.arm.layout.cartesian_high)
    td = TensorDict({"action": torch.tensor([1.0, 1.0, 1.0, -1.0])}, [])
    for _ in range(15):
        td = env.step(td)
    np.testing.assert_allclose(env.tcp_target, high)
    np.testing.assert_allclose(env.tcp_pos(), high, atol=0.03)  # the TCP follows to the corner
    low = np.array(env.arm.layout.cartesian_low)
    td["action"] = torch.tensor([-1.0, -1.0, -1.0, -1.0])
    for _ in range(15):
        env.step(td)
    np.testing.assert_allclose(env.tcp_target, low)


def test_out_of_range_actions_are_clipped():
    big, clipped = PandaPickCubeEnv(seed=2), PandaPickCubeEnv(seed=2)
    big.reset()
    clipped.reset()
    a = big.step(TensorDict({"action": torch.tensor([5.0, -3.0, 0.5, 7.0])}, []))
    b = clipped.step(TensorDict({"action": torch.tensor([1.0, -1.0, 0.5, 1.0])}, []))
    torch.testing.assert_close(a["next", "observation"], b["next", "observation"])
    assert a["next", "observation"][3] == 1.0  # gripper command saturates at closed


@pytest.mark.parametrize("bad", [
    torch.tensor([float("nan"), 0.0, 0.0, 0.0]),
    torch.tensor([0.0, float("inf"), 0.0, 0.0]),
    torch.zeros(3),
    torch.zeros(2, 4),
])
def test_bad_actions_raise_and_leave_state_untouched(bad):
    env = PandaPickCubeEnv(seed=0)
    env.reset()
    env.step(TensorDict({"action": torch.tensor([0.3, 0.0, -0.2, 0.5])}, []))
    qpos, qvel, time = env.data.qpos.copy(), env.data.qvel.copy(), env.data.time
    target, ctrl = env.tcp_target, env.data.ctrl.copy()
    with pytest.raises(ValueError, match="action must"):
        env._step(TensorDict({"action": bad}, []))
    np.testing.assert_array_equal(env.data.qpos, qpos)
    np.testing.assert_array_equal(env.data.qvel, qvel)
    np.testing.assert_array_equal(env.data.ctrl, ctrl)
    np.testing.assert_array_equal(env.tcp_target, target)
    assert env.data.time == time


@pytest.mark.parametrize("bad", [
    torch.tensor([True, False, False, False]),
    torch.tensor([1, 0, 0, 0]),
    torch.tensor([1, 0, 0, 0], dtype=torch.uint8),
    torch.tensor([0.5 + 0j, 0, 0, 0]),
    torch.tensor([0.5 + 0j, 0, 0, complex(0.0, float("nan"))]),
])
def test_non_floating_actions_refused_by_dtype_before_the_simulator(bad):
    # True would pass as 1.0 and an imaginary NaN would vanish in float(): refused by name instead.
    env = PandaPickCubeEnv(seed=0)
    env.reset()
    qpos, target, time = env.data.qpos.copy(), env.tcp_target, env.data.time
    with pytest.raises(ValueError, match=f"action must be floating point .*dtype {bad.dtype}"):
        env.step(TensorDict({"action": bad}, []))
    np.testing.assert_array_equal(env.data.qpos, qpos)
    np.testing.assert_array_equal(env.tcp_target, target)
    assert env.data.time == time


def test_random_actions_of_torchrl_collectors_still_pass():
    from torchrl.collectors import Collector

    env = PandaPickCubeEnv(seed=0)
    assert env.rand_step(env.reset())["next", "observation"].shape == (10,)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):  # any float width is a valid action
        env.step(TensorDict({"action": torch.tensor([0.1, 0.0, -0.1, 0.5], dtype=dtype)}, []))
    collector = Collector(env, policy=None, frames_per_batch=8, total_frames=8)
    try:
        batch = next(iter(collector))
    finally:
        collector.shutdown()
    assert batch.numel() == 8 and batch["action"].dtype == torch.float32


@pytest.mark.parametrize("kwargs, match", [
    ({"reward_type": "shaped"}, "reward_type"),
    ({"control_hz": 7.0}, "whole number"),
    ({"control_hz": float("nan")}, "control_hz"),
    ({"physics_dt": -0.002}, "physics_dt"),
    ({"batch_size": [2]}, "batch_size"),
    ({"pixels": True, "camera_keys": ("side",)}, "camera_keys"),
    ({"image_size": 0}, "image_size"),
    ({"max_episode_steps": 0}, "max_episode_steps"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PandaPickCubeEnv(**kwargs)


def test_control_rate_sets_physics_substeps():
    env = PiperPickCubeEnv(control_hz=20, physics_dt=0.005)
    assert env.n_substeps == 10
    env.reset()
    env.rand_step()
    assert math.isclose(env.data.time, 0.05)


def test_impedance_controller_variant(close_after):
    env = PandaPickCubeEnv(controller="impedance", seed=1)
    close_after(env)
    check_env_specs(env, seed=0)
    assert {env.model.actuator(i).name for i in range(env.model.nu)} >= {"panda/cartesian_x", "panda/rotation_z"}
    env.set_seed(1)
    td = env.rollout(40, ScriptedPickPolicy())
    assert td["next", "success"].any()
    with pytest.raises(ValueError, match="controller"):
        PandaPickCubeEnv(controller="joint_velocity")


def test_scripted_policy_on_pixel_task_uses_privileged_block_position(close_after):
    env = PiperPickCubeEnv(pixels=True, image_size=32, seed=3)
    close_after(env)
    td = env.rollout(30, ScriptedPickPolicy(env=env))
    assert td["next", "success"].any()
    with pytest.raises(ValueError, match="block_pos"):
        ScriptedPickPolicy()(env.reset())
    # a block_pos entry (e.g. stored with demos) takes precedence over the env
    td = env.reset()
    td["block_pos"] = torch.tensor(env.block_pos(), dtype=torch.float32)
    torch.testing.assert_close(ScriptedPickPolicy()(td.clone())["action"],
                               ScriptedPickPolicy(env=env)(td.clone())["action"])


@pytest.mark.parametrize("cls", ENVS)
def test_step_output_needs_none_of_torchrl_generic_step_processing(cls):
    # The env skips EnvBase._step_proc_data (reshape + done completion): its _step output must be
    # exactly what the generic processing would make of it, including on the truncating step.
    from torchrl.envs import EnvBase

    env = cls(max_episode_steps=3, terminate_on_success=True)
    env.set_seed(0)
    td = env.reset()
    for _ in range(3):
        td["action"] = torch.tensor([0.3, -0.2, 0.5, 1.0])
        out = env._step(td)
        generic = EnvBase._step_proc_data(env, out.clone())
        assert set(generic.keys(True, True)) == set(out.keys(True, True))
        for key, value in generic.items(True, True):
            assert value.shape == out[key].shape and value.dtype == out[key].dtype, key
            assert torch.equal(value, out[key]), key
        td = out
    assert out["truncated"].item() and out["done"].item()
    env.close()
