"""Actor loop of the pixel tasks with the real DrQ policy, on one core: env steps/s per trunk setting.

Each row steps the simulated pick-cube task (two 128x128 cameras) with the policy in the loop, as a
pixel actor does, with ``torch.set_num_threads(1)``:

- ``env``: random actions, no policy (the floor: physics + two renders);
- ``exact``: SERL's path, the policy runs the frozen ResNet-10 on both frames each step;
- ``cached K``: the CPU preset's path, :class:`~torchrl_serl.envs.transforms.TrunkFeatures` encodes
  each frame as K views in one trunk call (view 0 acts, the others are for the learner) and the
  policy reads view 0.

Trunk settings: ``fp32`` (channels-first, the default before ``drq.channels_last``), ``fp32-cl``
(channels-last, the same math, ``drq.channels_last``), ``bf16-cl`` (``drq.trunk_bf16``: bfloat16
autocast, features within ~1% of float32), and on request ``bf16-cl-compiled`` (that trunk under
``torch.compile``: ``drq.trunk_compile`` on the cached path; on the exact path, where the policy
runs the trunk, not an option of the recipes). The trunk's own cost per step (its call on the step's
``cams * K`` images) is timed alone beside it. Rows are timed in interleaved rounds and each keeps
its best round, so all see the same machine load.

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/bench_pixel_actor.py --steps 100 --rounds 3
"""

from __future__ import annotations

import argparse
import time

import torch
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_serl.training.agent_factory import make_drq_agent, make_trunk_features
from torchrl_serl.training.config import DrQConfig, EnvConfig
from torchrl_serl.training.env_factory import make_sim_env

CAMERAS = ("front", "wrist")
TRUNKS = {"fp32": {"channels_last": False}, "fp32-cl": {"channels_last": True},
          "bf16-cl": {"channels_last": True, "trunk_bf16": True}}
COMPILED = "bf16-cl-compiled"  # bf16-cl with the trunk under torch.compile


def make_row(task: str, path: str, trunk: str, views: int, image_size: int):
    """(env, policy or None, trunk, images per step) for one row."""
    env = make_sim_env(EnvConfig(task=task, pixels=True, image_size=image_size), seed=0)
    if path == "env":
        return env, None, None, 0
    compiled = trunk == COMPILED
    cfg = DrQConfig(feature_views=views if path == "cached" else 0, trunk_compile=compiled,
                    **TRUNKS["bf16-cl" if compiled else trunk])
    agent = make_drq_agent(cfg, CAMERAS, image_size, env.observation_spec["observation"].shape[-1],
                           env.action_spec.shape[-1])
    if path == "cached":
        features = make_trunk_features(agent, cfg, seed=0)  # drq.trunk_compile: compiled at the first reset
        return TransformedEnv(env, features), agent.policy.eval(), features._stepping_trunk(), len(CAMERAS) * views
    frozen = agent.loss.encoder.trunk(CAMERAS[0])
    if compiled:
        frozen.compile()  # in place: the policy's calls get the compiled forward
    return env, agent.policy.eval(), frozen, len(CAMERAS)


def steps_per_s(env, policy, steps: int) -> float:
    with torch.inference_mode(), set_exploration_type(ExplorationType.RANDOM):
        t = time.perf_counter()
        env.rollout(steps, policy, break_when_any_done=False)
        return steps / (time.perf_counter() - t)


def trunk_ms(trunk, images: int, image_size: int, repeats: int = 5) -> float:
    x = torch.randint(0, 256, (images, 3, image_size, image_size), dtype=torch.uint8)
    with torch.inference_mode():
        trunk(x)
        t = time.perf_counter()
        for _ in range(repeats):
            trunk(x)
        return (time.perf_counter() - t) / repeats * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="panda", choices=["panda", "piper"])
    p.add_argument("--steps", type=int, default=100, help="env steps per row per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--views", type=int, default=2, help="K of the cached path (the CPU preset: 2)")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--trunks", nargs="+", default=list(TRUNKS), choices=[*TRUNKS, COMPILED])
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    specs = [("env", "-")] + [(path, trunk) for path in ("exact", "cached") for trunk in args.trunks]
    rows = [(path, trunk, *make_row(args.task, path, trunk, args.views, args.image_size)) for path, trunk in specs]
    for _, _, env, policy, _, _ in rows:  # warm up: first renders, first trunk calls
        steps_per_s(env, policy, 5)
    best = [0.0] * len(rows)
    for _ in range(args.rounds):
        for i, (_, _, env, policy, _, _) in enumerate(rows):
            best[i] = max(best[i], steps_per_s(env, policy, args.steps))

    print(f"\nPixel actor loop, {args.task}, two {args.image_size}x{args.image_size} cameras, 1 thread, "
          f"best of {args.rounds} rounds of {args.steps} steps\n")
    print("| path | trunk | actor steps/s | ms per step | trunk images per step | trunk ms per step |")
    print("|---|---|---|---|---|---|")
    for (path, trunk, env, _, frozen, images), rate in zip(rows, best):
        name = f"cached K={args.views}" if path == "cached" else path
        cost = f"{trunk_ms(frozen, images, args.image_size):.1f}" if frozen is not None else "-"
        print(f"| {name} | {trunk} | {rate:.1f} | {1e3 / rate:.1f} | {images or '-'} | {cost} |")
        env.close()


if __name__ == "__main__":
    main()
