"""Control-loop timing of a real arm while a DrQ learner trains on the same machine.

The actor steps ``PiperEnv`` (real piper-sdk against the CAN double on python-can's virtual bus)
or ``FrankaEnv`` (franky against franky-sim) at ``--hz`` with two 128x128 test-pattern cameras,
acting with the DrQ policy on cached ResNet-10 features (the CPU preset: the actor encodes each
frame once). The learner makes SERL learner steps (UTD 4, batch 256, bf16 where the CPU has it
natively, else float32, as the preset) on synthetic cached
batches, at ``--updates-per-step`` learner steps per env step, as fast as it can but never past
that ratio. Two loops:

- ``sync``: today's synchronous loop: a TorchRL ``Collector`` in the learner's process, learner
  steps between collector batches (the step after each batch waits for them);
- ``async``: the recipes' loop: the env in its own process
  (:meth:`~torchrl_serl.training.background_collector.BackgroundCollector.async_collector`), the learner
  training at the same time, fresh weights after every learner step.

Prints the control period (time between the ends of the arm's consecutive steps of one episode,
stamped right after the arm's tick and sensing): mean, p99, max, the share of steps later than
110 % of the period, and the learner's achieved ratio (learner steps per env step). Then the
actor's part of the period (from the end of a step to the next action reaching the arm env:
encoding, policy, collector): its median and p99, and its median over the late steps alone.

    python benchmarks/bench_actor_timing.py --steps 1000 --hz 10
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import uuid

import numpy as np
import torch
from torchrl.envs import Transform, TransformedEnv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "envs", "robots"))  # piper_double, franky-sim launcher

from bench_robot_loop import test_pattern_cameras  # noqa: E402

CAMERAS = ("front", "wrist")
EPISODE_STEPS = 100
WALL_TIME = ("next", "wall_time_s")
ACT_TIME = ("next", "act_wall_time_s")
GC_TIME = ("next", "gc_s")


class StampWallTime(Transform):
    """Writes the monotonic clock (system-wide, comparable across processes) at the end of each step
    (``wall_time_s``) and when its action reached the arm env (``act_wall_time_s``), and the time
    this process spent in Python's garbage collector since the previous step (``gc_s``)."""

    _act_time = float("nan")

    def __init__(self):
        super().__init__()
        self._gc_s, self._gc_started = 0.0, 0.0
        gc.callbacks.append(self._time_collection)

    def _time_collection(self, phase, info):
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._gc_s += time.perf_counter() - self._gc_started

    def _inv_call(self, tensordict):
        self._act_time = time.monotonic()
        return tensordict

    def _step(self, tensordict, next_tensordict):
        next_tensordict.set("act_wall_time_s", torch.tensor([self._act_time], dtype=torch.float64))
        next_tensordict.set("gc_s", torch.tensor([self._gc_s], dtype=torch.float64))
        self._gc_s = 0.0
        return next_tensordict.set("wall_time_s", torch.tensor([time.monotonic()], dtype=torch.float64))

    def _reset(self, tensordict, tensordict_reset):
        self._act_time = float("nan")
        return self._step(tensordict, tensordict_reset)

    def transform_observation_spec(self, observation_spec):
        from torchrl.data import Unbounded

        for key in ("wall_time_s", "act_wall_time_s", "gc_s"):
            observation_spec[key] = Unbounded(shape=(1,), dtype=torch.float64)
        return observation_spec


def make_arm_env(arm: str, hz: float, franky_host: str, features, cpus: set[int] | None = None):
    """The arm env with the actor's transforms; built in the process that steps it (the Piper
    double's virtual CAN bus lives in that process), pinned to ``cpus`` if given."""
    torch.set_num_threads(1)
    if cpus:
        os.sched_setaffinity(0, cpus)  # this thread; the threads the env starts inherit it
    if arm == "piper":
        from piper_double import PiperDouble

        from torchrl_serl.envs.robots.arm_env import PiperEnv

        channel = f"bench-{uuid.uuid4().hex[:6]}"
        double = PiperDouble(channel).start()
        env = PiperEnv(channel, bustype="virtual", cameras=test_pattern_cameras(), control_hz=hz,
                       max_episode_steps=EPISODE_STEPS, seed=0)
        env._bench_double = double  # lives as long as the env
    else:
        from torchrl_serl.envs.robots.arm_env import FrankaEnv

        env = FrankaEnv(franky_host, realtime=False, cameras=test_pattern_cameras(), control_hz=hz,
                        max_episode_steps=EPISODE_STEPS, arm_kwargs={"relative_dynamics_factor": 0.6}, seed=0)
    # the stamp comes first, right after the arm's tick and sensing, before the actor encodes the frames
    return TransformedEnv(env, StampWallTime()).append_transform(features)


def learner_precision() -> str:
    """What the CPU preset's learner (and so :func:`make_learner`'s) computes in on this CPU."""
    from torchrl_serl import precision

    return "bf16" if precision.native_bf16("cpu") else "fp32 (no native bf16)"


def make_learner(trunk_bf16: bool = False):
    """A DrQ agent (CPU preset: cached features of 2 views, bf16 learner where native; ``trunk_bf16``: the
    frozen trunk under bfloat16 autocast) and one learner step on a synthetic batch of cached
    features."""
    from tensordict import TensorDict

    from torchrl_serl import precision
    from torchrl_serl.modules.encoders import resnet10
    from torchrl_serl.modules.encoders.cached_features import feature_key
    from torchrl_serl.training.agent_factory import make_drq_agent
    from torchrl_serl.training.config import DrQConfig
    from torchrl_serl.training.updater import SACUpdater, make_sac_optimizers

    cfg = DrQConfig(feature_views=2, trunk_bf16=trunk_bf16)
    agent = make_drq_agent(cfg, CAMERAS, 128, 7, 4)
    updater = SACUpdater(agent.loss, make_sac_optimizers(agent.loss, cfg), agent.target_updater, cfg.utd_ratio,
                         bf16=precision.native_bf16("cpu"))  # as the CPU preset
    n = cfg.batch_size * cfg.utd_ratio
    feat_shape = (n, cfg.feature_views, *resnet10().output_shape(128))

    def obs():
        return {**{feature_key(c): torch.rand(feat_shape).half() for c in CAMERAS}, "observation": torch.randn(n, 7)}

    batch = TensorDict({**obs(), "action": torch.rand(n, 4) * 2 - 1,
                        "next": {**obs(), "reward": torch.randn(n, 1), "done": torch.zeros(n, 1, dtype=torch.bool),
                                 "terminated": torch.zeros(n, 1, dtype=torch.bool)}}, batch_size=[n])
    return agent, cfg, lambda: updater.update(batch)


def periods_ms(batches) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step of one episode after its first [ms]: the period (time between the ends of
    consecutive steps), its actor part (from the end of a step to the next action reaching the
    arm env: encoding, policy, collector; the rest is the arm's step and its sleep to the tick) and
    the actor process's garbage collection within it."""
    stream = torch.cat(batches)
    t = stream[WALL_TIME].reshape(-1).numpy()
    act = stream[ACT_TIME].reshape(-1).numpy()
    gc_s = stream[GC_TIME].reshape(-1).numpy()
    same_episode = ~stream["next", "done"].reshape(-1).numpy()[:-1]
    return (np.diff(t)[same_episode] * 1e3, (act[1:] - t[:-1])[same_episode] * 1e3,
            gc_s[1:][same_episode] * 1e3)


def pin_process(cpus: set[int]) -> None:
    """Pins every thread of this process to ``cpus``."""
    for tid in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(tid), cpus)


def run_sync(env_fn, agent, learner_step, steps: int, ratio: float):
    from torchrl_serl.training.collector import make_collector

    env = env_fn()
    collector = make_collector(env, agent.policy, frames_per_batch=10)
    batches, updates, frames = [], 0, 0
    try:
        for batch in collector:
            batches.append(batch)
            frames += batch.numel()
            while updates < ratio * frames:  # the learner's steps, inside the control loop
                learner_step()
                updates += 1
            if frames >= steps:
                break
    finally:
        collector.shutdown()
        env.close()
    return batches, updates / frames


def run_async(env_fn, agent, learner_step, steps: int, ratio: float, learner_nice: int = 0,
              learner_cpus: set[int] | None = None):
    from torchrl_serl.training.background_collector import BackgroundCollector
    from torchrl_serl.training.process_priority import raise_process_niceness

    feed = BackgroundCollector.async_collector(env_fn, agent.policy, frames_per_batch=10, total_frames=-1).start()
    raise_process_niceness(learner_nice)  # as drq.py's --learner_nice: the actor process keeps its niceness
    all_cpus = os.sched_getaffinity(0)
    if learner_cpus:
        pin_process(learner_cpus)
    batches, updates, frames = [], 0, 0
    try:
        while frames < steps:
            new = feed.drain(timeout_s=0.0 if updates < ratio * frames else 0.1)
            batches += new
            frames += sum(b.numel() for b in new)
            if updates < ratio * frames:
                learner_step()
                updates += 1
                feed.update_policy_weights_()
    finally:
        feed.shutdown()
        pin_process(all_cpus)
    return batches, updates / frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--sync-steps", type=int, default=None, help="steps of the sync loop (default: --steps)")
    parser.add_argument("--hz", type=float, default=10.0)
    parser.add_argument("--updates-per-step", type=float, default=0.1, help="learner steps per env step (CPU preset: 0.1; SERL: 1)")
    parser.add_argument("--arms", nargs="+", default=["piper", "franka"], choices=["piper", "franka"])
    parser.add_argument("--loops", nargs="+", default=["sync", "async"], choices=["sync", "async"])
    parser.add_argument("--threads", type=int, default=2, help="the learner's torch threads")
    parser.add_argument("--pin", action="store_true",
                        help="async: the actor process on CPU 0, the learner's threads on the others")
    parser.add_argument("--trunk-bf16", action="store_true",
                        help="the actor's frozen trunk under bfloat16 autocast (drq.trunk_bf16)")
    parser.add_argument("--worst", type=int, default=0,
                        help="also print the N latest steps and the actor process's garbage collection")
    parser.add_argument("--learner-nice", type=int, default=0,
                        help="async: niceness the learner process takes once the actor process runs "
                             "(drq.py's --learner_nice; it stays for the rest of this run)")
    args = parser.parse_args()
    from functools import partial

    from torchrl_serl.training.agent_factory import make_trunk_features

    torch.set_num_threads(args.threads)
    agent, cfg, learner_step = make_learner(args.trunk_bf16)
    learner_step()  # warm-up
    period = 1e3 / args.hz
    print(f"{args.hz:g} Hz (period {period:.0f} ms), two 128x128 cameras, DrQ policy on cached ResNet-10 features; "
          f"trunk {'bf16' if args.trunk_bf16 else 'fp32'}; learner: UTD {cfg.utd_ratio}, batch {cfg.batch_size}, {learner_precision()}, {args.threads} threads, "
          f"{args.updates_per_step:g} learner steps per env step at most, async learner niceness +{args.learner_nice}"
          + (", actor pinned to CPU 0, learner to the rest" if args.pin else ""))
    print(f"{'arm':<8}{'loop':<7}{'steps':>6}{'mean ms':>9}{'p99 ms':>9}{'max ms':>9}{'>110%':>8}{'ratio':>8}"
          f"{'actor md':>9}{'actor p99':>9}{'late: md':>9}")
    franky = None
    try:
        if "franka" in args.arms:
            from franky_sim_server import start_franky_sim

            franky = start_franky_sim()
        for arm in args.arms:
            cpus = sorted(os.sched_getaffinity(0))
            actor_cpus, learner_cpus = ({cpus[0]}, set(cpus[1:]) or {cpus[0]}) if args.pin else (None, None)
            env_fn = partial(make_arm_env, arm, args.hz, franky[0] if franky else "",
                             make_trunk_features(agent, cfg, seed=0), actor_cpus)
            for loop in args.loops:
                steps = args.sync_steps or args.steps if loop == "sync" else args.steps
                if loop == "sync":
                    batches, achieved = run_sync(env_fn, agent, learner_step, steps, args.updates_per_step)
                else:
                    batches, achieved = run_async(env_fn, agent, learner_step, steps, args.updates_per_step,
                                                  args.learner_nice, learner_cpus)
                p, actor, gc_ms = periods_ms(batches)
                late = p > 1.1 * period
                actor_late = np.median(actor[late]) if late.any() else float("nan")
                print(f"{arm:<8}{loop:<7}{len(p):>6}{p.mean():>9.1f}{np.percentile(p, 99):>9.1f}{p.max():>9.1f}"
                      f"{late.mean() * 100:>7.1f}%{achieved:>8.3f}{np.median(actor):>9.1f}{np.percentile(actor, 99):>9.1f}"
                      f"{actor_late:>9.1f}", flush=True)
                if args.worst:
                    worst = np.argsort(p)[::-1][:args.worst]
                    print("  worst steps (index: period ms / actor ms / gc ms):",
                          ", ".join(f"{i}: {p[i]:.0f}/{actor[i]:.0f}/{gc_ms[i]:.0f}" for i in worst), flush=True)
                    print(f"  garbage collection in the actor process: {gc_ms.sum():.0f} ms in all, "
                          f"{gc_ms.max():.0f} ms at most in one period", flush=True)
    finally:
        if franky is not None:
            from franky_sim_server import stop_franky_sim

            stop_franky_sim(franky[1])


if __name__ == "__main__":
    main()
