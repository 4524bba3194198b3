"""Env steps/s of N simulated pixel actors feeding one learner (``recipes/drq.py --actors N``).

Each actor is drq.py's actor under ``--preset cpu``, in a process of its own: the simulated
PandaPickCube with two 128x128 cameras, ``TrunkFeatures`` (ResNet-10, 2 views of each frame) and
the DrQ policy, behind :meth:`BackgroundCollector.async_collector
<torchrl_serl.training.background_collector.BackgroundCollector.async_collector>`. Two modes:

- ``alone``: the actors with nobody training (their bound on this machine);
- ``learner``: this process trains at the same time, as fast as it can (SERL learner steps of the
  CPU preset: UTD 4, batch 256, bf16 where native, on synthetic cached batches as in ``bench_actor_timing.py``),
  pushing the weights after every learner step; the actors are not held back.

Prints env steps/s (all actors, and per actor) and learner steps/s over ``--seconds`` once every
actor has delivered a batch, and the learner's torch threads (TorchRL's multi-process collectors
leave the consumer ``max(1, threads - actors)``).

    MUJOCO_GL=egl python benchmarks/bench_actors.py --actors 1 2 --seconds 60
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial

import torch
from torchrl.envs import TransformedEnv

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_actor_timing import learner_precision, make_learner  # noqa: E402

from torchrl_serl.training.agent_factory import make_trunk_features  # noqa: E402
from torchrl_serl.training.background_collector import BackgroundCollector  # noqa: E402
from torchrl_serl.training.config import EnvConfig  # noqa: E402
from torchrl_serl.training.env_factory import make_sim_env  # noqa: E402

FRAMES_PER_BATCH = 10


def make_actor_env(task: str, features, seed: int):
    torch.set_num_threads(1)
    return TransformedEnv(make_sim_env(EnvConfig(task=task, pixels=True), seed), features)


def measure(n: int, mode: str, seconds: float, task: str, agent, cfg, learner_step) -> tuple[float, float, int]:
    """(env steps/s of all actors, learner steps/s, the learner's torch threads) over ``seconds``."""
    envs = [partial(make_actor_env, task, make_trunk_features(agent, cfg, seed=i), i) for i in range(n)]
    feed = BackgroundCollector.async_collector(envs, agent.policy, frames_per_batch=FRAMES_PER_BATCH,
                                               total_frames=-1).start()
    try:
        started: set[int] = set()
        while len(started) < n:  # every actor up (MuJoCo, EGL, the trunk) and stepping
            for batch in feed.drain(timeout_s=1.0):
                started.add(int(batch["collector", "traj_ids"][0]))
        frames0, updates, t0 = feed.frames, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            if mode == "learner":
                learner_step()
                updates += 1
                feed.update_policy_weights_()
            else:
                time.sleep(0.1)
            feed.drain()
        elapsed = time.perf_counter() - t0
        # TorchRL leaves this process max(1, threads - actors) threads
        return (feed.frames - frames0) / elapsed, updates / elapsed, torch.get_num_threads()
    finally:
        feed.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--modes", nargs="+", default=["alone", "learner"], choices=["alone", "learner"])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--task", default="panda", choices=["panda", "piper"])
    parser.add_argument("--threads", type=int, default=2, help="the learner's torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    agent, cfg, learner_step = make_learner()
    learner_step()  # warm-up
    print(f"{os.cpu_count()} CPUs; {args.task} pick-cube, two 128x128 cameras, ResNet-10 features of 2 views per frame; "
          f"learner: UTD {cfg.utd_ratio}, batch {cfg.batch_size}, {learner_precision()}, {args.threads} threads; {args.seconds:g} s each")
    print(f"{'actors':>6}  {'mode':<8}{'env steps/s':>12}{'per actor':>11}{'learner steps/s':>17}{'threads':>9}")
    for mode in args.modes:
        for n in args.actors:
            torch.set_num_threads(args.threads)
            sps, ups, threads = measure(n, mode, args.seconds, args.task, agent, cfg, learner_step)
            print(f"{n:>6}  {mode:<8}{sps:>12.1f}{sps / n:>11.1f}{ups:>17.2f}{threads:>9}", flush=True)


if __name__ == "__main__":
    main()
