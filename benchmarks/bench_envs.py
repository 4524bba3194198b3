"""Simulated-task throughput against the raw MuJoCo cost of the same work, in the same run.

For each task variant it times ``N`` control steps of

- ``raw``: a replay of the same episode's physics (same start state, the logged ``ctrl`` of every
  physics step, the same ``mj_step`` calls) plus the same renders for pixel tasks, without the
  controller, TorchRL or observations: the floor no env can beat;
- ``env``: ``env.rollout`` with pre-drawn random actions (TorchRL, auto-reset, controller,
  rewards, specs);
- ``SerialEnv``/``ParallelEnv`` batches (steps/s counts every env step of the batch);
- ``actor loop``: env step + a SAC-size policy forward (MLP 10 -> 256 -> 256 -> 8, tanh-normal
  mean), i.e. the highest control rate an actor could sustain with the policy in the loop.

Overhead = env time / raw time - 1 (target for state tasks: <= 30%). Run:

    OMP_NUM_THREADS=1 MUJOCO_GL=egl python benchmarks/bench_envs.py --steps 200
    OMP_NUM_THREADS=1 MUJOCO_GL=egl python benchmarks/bench_envs.py --success-seeds 20

Timings are wall-clock on a shared machine; compare rows from the same run only.
"""

from __future__ import annotations

import argparse
import functools
import time

import mujoco
import numpy as np
import torch
from torchrl.envs import ParallelEnv, SerialEnv
from torchrl.modules import MLP

from torchrl_serl.envs import PandaPickCubeEnv, PiperPickCubeEnv, ScriptedPickPolicy

VARIANTS = {
    "panda-osc": (PandaPickCubeEnv, {"controller": "osc"}),
    "panda-impedance": (PandaPickCubeEnv, {"controller": "impedance"}),
    "piper": (PiperPickCubeEnv, {}),
}


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def record_controls(env, steps: int) -> tuple[mujoco.MjData, list[tuple[np.ndarray, int]]]:
    """Run the benchmark episode once and log every physics step's ``ctrl``; returns the start
    state and, per control step, ``(ctrl [n_substeps, nu], nstep)`` with ``nstep`` = 1 when the
    controller changes ``ctrl`` every substep (OSC) or ``n_substeps`` when it holds it (IK, impedance)."""
    env.set_seed(0)
    td = env.reset()
    start = mujoco.MjData(env.model)
    mujoco.mj_copyData(start, env.model, env.data)
    log = []
    mujoco.set_mjcb_control(lambda m, d: log.append(d.ctrl.copy()))
    try:
        policy = ReplayActions(env.batch_size, steps)
        for _ in range(steps):
            td = env.step(policy(td))["next"]
    finally:
        mujoco.set_mjcb_control(None)
    ctrls = np.stack(log).reshape(steps, env.n_substeps, env.model.nu)
    plan = [(c, env.n_substeps if np.all(c == c[0]) else 1) for c in ctrls]
    return start, plan


def raw_cost(env, steps: int, repeats: int) -> float:
    """Seconds to replay the benchmark episode's exact physics: the same ``mj_step`` calls from the
    same state with the same controls (+ the same renders for pixel tasks), no controller."""
    model = env.model
    start, plan = record_controls(env, steps)
    data = mujoco.MjData(model)
    renderer = None
    if env.pixels:
        renderer = mujoco.Renderer(model, env.image_size, env.image_size)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                     mujoco.mjtRndFlag.mjRND_SKYBOX):
            renderer.scene.flags[flag] = False
        for cam in env.camera_keys:  # first frames compile shaders: keep them out of the timing
            renderer.update_scene(start, camera=cam)
            renderer.render()

    def run():
        mujoco.mj_copyData(data, model, start)
        for ctrl, nstep in plan:
            if nstep > 1:
                data.ctrl[:] = ctrl[0]
                mujoco.mj_step(model, data, nstep=nstep)
            else:
                for row in ctrl:
                    data.ctrl[:] = row
                    mujoco.mj_step(model, data)
            if renderer is not None:
                for cam in env.camera_keys:
                    renderer.update_scene(data, camera=cam)
                    renderer.render()

    try:
        return _best_of(run, repeats)
    finally:
        if renderer is not None:
            renderer.close()


class ReplayActions:
    """Pre-drawn uniform actions, so the timing holds the env and not ``rand_action``."""

    def __init__(self, batch_size, steps: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.actions = torch.rand(steps, *batch_size, 4, generator=gen) * 2 - 1
        self.i = 0

    def __call__(self, td):
        td["action"] = self.actions[self.i % len(self.actions)]
        self.i += 1
        return td


def env_cost(env, steps: int, repeats: int) -> float:
    def run():
        env.set_seed(0)
        env.rollout(steps, ReplayActions(env.batch_size, steps), break_when_any_done=False)

    return _best_of(run, repeats)


def actor_loop_cost(env, steps: int, repeats: int) -> float:
    """Seconds for ``steps`` iterations of policy forward + env step (no learning)."""
    obs_dim = env.observation_spec["observation"].shape[-1]
    policy = MLP(in_features=obs_dim, out_features=8, num_cells=[256, 256])

    def run():
        td = env.reset()
        for _ in range(steps):
            with torch.no_grad():
                loc = policy(td["observation"])[..., :4]
            td["action"] = torch.tanh(loc)
            td = env.step_and_maybe_reset(td)[1]

    return _best_of(run, repeats)


def scripted_success(seeds: int) -> None:
    """Print how many seeded episodes (seeds 1000..) the scripted policy solves, per task."""
    print(f"\n| {'task (scripted policy, 100 steps)':<40} | {'lifted':>8} |")
    print(f"|{'-' * 42}|{'-' * 10}|")
    for name, (cls, kwargs) in VARIANTS.items():
        for pixels in (False, True):
            env = cls(pixels=pixels, **kwargs)
            policy = ScriptedPickPolicy(env=env)
            wins = 0
            for seed in range(1000, 1000 + seeds):
                env.set_seed(seed)
                wins += bool(env.rollout(env.max_episode_steps, policy)["next", "success"].any())
            env.close()
            label = f"{name} {'pixels' if pixels else 'state'}"
            print(f"| {label:<40} | {wins:>3}/{seeds:<4} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="control steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many interleaved runs")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {list(VARIANTS)}")
    parser.add_argument("--batch", type=int, default=4, help="SerialEnv batch size")
    parser.add_argument("--workers", type=int, default=2, help="ParallelEnv workers (0: skip)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--no-pixels", action="store_true", help="state tasks only")
    parser.add_argument("--success-seeds", type=int, default=0,
                        help="instead of timing, report scripted-policy success over this many seeds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.success_seeds:
        scripted_success(args.success_seeds)
        return

    rows = []
    for name in args.variants.split(","):
        cls, kwargs = VARIANTS[name]
        for pixels in (False,) if args.no_pixels else (False, True):
            # one episode per measurement, so the raw replay sees exactly the env's physics
            make = functools.partial(cls, pixels=pixels, image_size=args.image_size,
                                     max_episode_steps=args.steps, **kwargs)
            env = make()
            # interleaved repeats, best of each: load from other processes hits all three alike
            times = {"raw": [], "env": [], "actor": []}
            for _ in range(args.repeats):
                times["raw"].append(raw_cost(env, args.steps, 1))
                times["env"].append(env_cost(env, args.steps, 1))
                times["actor"].append(actor_loop_cost(env, args.steps, 1))
            raw, single, actor = (min(times[k]) for k in ("raw", "env", "actor"))
            env.close()
            label = f"{name} {'pixels' if pixels else 'state'}"
            rows.append((label, "raw mj_step" + (" + renders" if pixels else ""), 1, args.steps / raw, ""))
            rows.append((label, "env", 1, args.steps / single, f"{100 * (single / raw - 1):+.0f}%"))
            rows.append((label, "actor loop (policy + env step)", 1, args.steps / actor, ""))
            batched = [("SerialEnv", SerialEnv, args.batch)]
            if args.workers:
                batched.append(("ParallelEnv", functools.partial(ParallelEnv, mp_start_method="spawn"),
                                args.workers))
            for label_b, ctor, n in batched:
                benv = ctor(n, make)
                try:
                    benv.rollout(2)  # start the workers outside the timing
                    t = env_cost(benv, args.steps // n, args.repeats)
                finally:
                    benv.close()
                rows.append((label, label_b, n, (args.steps // n) * n / t, ""))
            print(f"done: {label}", flush=True)

    print(f"\n{args.steps} control steps per row (10 Hz control, 2 ms physics), best of {args.repeats}; "
          f"torch threads 1\n")
    print(f"| {'task':<24} | {'what':<32} | {'envs':>4} | {'steps/s':>8} | {'overhead vs raw':>15} |")
    print(f"|{'-' * 26}|{'-' * 34}|{'-' * 6}|{'-' * 10}|{'-' * 17}|")
    for task, what, n, sps, over in rows:
        print(f"| {task:<24} | {what:<32} | {n:>4} | {sps:>8.1f} | {over:>15} |")


if __name__ == "__main__":
    main()
