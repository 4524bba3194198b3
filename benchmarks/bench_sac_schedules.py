"""Learner steps/s of SACUpdater's update schedules for state SAC, same run, interleaved.

SERL's state defaults (obs 10, action 4, 10 critics, hidden [256, 256] with LayerNorm, UTD 8,
batch 256, one [8 * 256] sample per learner step) through ``SACUpdater`` as
``recipes/sac_state_sim.py`` builds it, in four schedules:

  default      critic-only updates on 7 minibatches, one fused critic + actor + temperature
               update on the last (this package's default)
  idle         the same, every optimizer stepping on every update (``idle_optimizer_steps``)
  whole        SERL's state schedule: 8 critic-only updates, then actor + temperature on the
               whole 2048-row sample (``actor_on_whole_sample``)
  idle+whole   both (SERL's learner)

Each schedule is timed in short interleaved windows (``--steps`` learner steps each, per round)
and keeps its best window, so all see the same machine load; the ratio to ``default`` is what
to compare across machines.

    OMP_NUM_THREADS=2 python benchmarks/bench_sac_schedules.py --threads 2 --compile
"""

from __future__ import annotations

import argparse
import os
import time

from bench_sac_state import ACT, OBS, _storage  # W1's state task and its 20k-transition store

SCHEDULES = {"default": (False, False), "idle": (True, False), "whole": (False, True), "idle+whole": (True, True)}


def _runner(name: str, args, sample):
    import torch

    from torchrl_serl.training.agent_factory import make_sac_agent
    from torchrl_serl.training.config import SACConfig
    from torchrl_serl.training.updater import SACUpdater, make_sac_optimizers

    idle, whole = SCHEDULES[name]
    cfg = SACConfig(utd_ratio=args.utd, batch_size=args.batch)
    torch.manual_seed(0)
    agent = make_sac_agent(cfg, OBS, ACT)
    updater = SACUpdater(agent.loss, make_sac_optimizers(agent.loss, cfg), agent.target_updater, cfg.utd_ratio,
                         compile=args.compile, bf16=args.bf16, idle_optimizer_steps=idle,
                         actor_on_whole_sample=whole)
    t0 = time.perf_counter()
    for _ in range(3):  # the first calls compile
        updater.update(sample())
    return lambda: updater.update(sample()), time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--utd", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="learner steps per timed window")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the losses")
    p.add_argument("--schedules", nargs="+", choices=list(SCHEDULES), default=list(SCHEDULES))
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    # a fresh [utd * B] tensordict per learner step, as the replay buffer gives
    sample = _storage(args.batch * args.utd, torch.device("cpu"))
    runners = {name: _runner(name, args, sample) for name in args.schedules}
    best = dict.fromkeys(runners, 0.0)
    for _ in range(args.rounds):
        for name, (step, _) in runners.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            best[name] = max(best[name], args.steps / (time.perf_counter() - t))
    base = best.get("default")
    print(f"threads {args.threads}, compiled {args.compile}, bf16 {args.bf16}, batch {args.utd} x {args.batch}\n")
    print("| schedule | learner steps/s | vs default | warm-up s |\n| --- | --- | --- | --- |")
    for name, (_, warmup_s) in runners.items():
        ratio = f"{best[name] / base:.2f}x" if base else ""
        print(f"| {name} | {best[name]:.2f} | {ratio} | {warmup_s:.1f} |")


if __name__ == "__main__":
    main()
