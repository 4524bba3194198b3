"""SerialEnv / ParallelEnv batching (renderers are created lazily inside the workers)."""

import functools

import torch
from torchrl.envs import ParallelEnv, SerialEnv
from torchrl.envs.utils import check_env_specs

from torchrl_serl.envs import PandaPickCubeEnv, PiperPickCubeEnv, ScriptedPickPolicy


def test_serial_env_batches_and_seeds_workers_differently():
    env = SerialEnv(2, functools.partial(PiperPickCubeEnv, pixels=True, image_size=32))
    try:
        check_env_specs(env, seed=0)
        env.set_seed(0)
        td = env.rollout(3)
        assert td["next", "observation"].shape == (2, 3, 7)
        assert td["next", "front"].shape == (2, 3, 3, 32, 32)
        assert not torch.equal(td["next", "front"][0], td["next", "front"][1])  # different cubes
    finally:
        env.close()


def test_serial_env_runs_the_scripted_policy_batched():
    env = SerialEnv(2, PiperPickCubeEnv)
    try:
        env.set_seed(5)
        td = env.rollout(30, ScriptedPickPolicy())
        assert td["next", "success"].any(dim=1).all()
    finally:
        env.close()


def test_parallel_env_with_pixels_matches_serial():
    make = functools.partial(PandaPickCubeEnv, pixels=True, image_size=32)
    par = ParallelEnv(2, make, mp_start_method="spawn")
    ser = SerialEnv(2, make)
    try:
        par.set_seed(7)
        ser.set_seed(7)
        gen = torch.Generator().manual_seed(0)
        actions = torch.rand(4, 2, 4, generator=gen) * 2 - 1
        outs = []
        for env in (par, ser):
            td = env.reset()
            frames = [td["front"]]
            for a in actions:
                td["action"] = a
                td = env.step(td)["next"]
                frames.append(td["front"])
            outs.append((torch.stack(frames), td["observation"]))
        assert outs[0][0].shape == (5, 2, 3, 32, 32) and outs[0][0].dtype == torch.uint8
        torch.testing.assert_close(outs[0][1], outs[1][1])
        torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    finally:
        par.close()
        ser.close()
