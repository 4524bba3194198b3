"""Two cores for the W1 critic ensemble: split each matmul (intra-op) or split the ensemble (inter-op)?

Times the heaviest part of SERL's state critic update, the compiled forward + backward of the
10-critic ``EnsembleQValue`` ([256, 256] + LayerNorm, batch 256, input 14) with its squared error,
three ways:

- ``intra 2``: one Python thread, 2 torch threads (each kernel split over both cores; today's path);
- ``inter 2x5``: two Python threads, 1 torch thread each, each holding 5 critics (one half of the
  ensemble per core, the direction issue 15 suggests);
- ``serial 1``: the two halves one after the other on 1 thread (the inter-op path's work, unsplit).

Each way runs in its own process (the torch thread count is fixed per process); the processes
alternate for ``--rounds`` rounds and each keeps its best. Also prints the big matmul's rate
(``bmm`` [10, 256, 256] x [10, 256, 256]) on 1 and 2 threads, against the fp32 FMA peak of the
cores at ``--ghz`` (Zen 4: 32 FLOP per cycle per core).

    python benchmarks/bench_ensemble_split.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

MODES = ("intra 2", "inter 2x5", "serial 1")
BATCH, IN, STEPS = 256, 14, 50


def _critic_step(num_critics: int):
    import torch

    from torchrl_serl.modules.critics import EnsembleQValue

    critic = EnsembleQValue(IN, num_critics)
    loss = torch.compile(lambda x, y: (critic(x) - y).pow(2).sum((-2, -1)).mean())
    x, y = torch.randn(BATCH, IN), torch.randn(BATCH, 1, 1)

    def step():
        critic.zero_grad(set_to_none=True)
        loss(x, y).backward()

    return step


def _child(mode: str) -> float:
    """Forward + backward passes of the whole ensemble per second."""
    import torch

    torch.set_num_threads(2 if mode == "intra 2" else 1)
    if mode == "intra 2":
        steps = [_critic_step(10)]
    else:
        steps = [_critic_step(5), _critic_step(5)]
    if mode == "inter 2x5":
        go, done = [threading.Event() for _ in steps], [threading.Event() for _ in steps]

        def worker(i: int) -> None:
            torch.set_num_threads(1)
            while True:
                go[i].wait()
                go[i].clear()
                steps[i]()
                done[i].set()

        for i in range(len(steps)):
            threading.Thread(target=worker, args=(i,), daemon=True).start()

        def whole():
            for event in go:
                event.set()
            for event in done:
                event.wait()
                event.clear()
    else:
        def whole():
            for step in steps:
                step()

    for _ in range(5):  # compiles (in the thread that runs it)
        whole()
    t = time.perf_counter()
    for _ in range(STEPS):
        whole()
    return STEPS / (time.perf_counter() - t)


def _bmm_gflops(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(10, 256, 256), torch.randn(10, 256, 256)
    for _ in range(10):
        torch.bmm(a, b)
    t, n = time.perf_counter(), 100
    for _ in range(n):
        torch.bmm(a, b)
    return 2 * 10 * 256**3 * n / (time.perf_counter() - t) / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ghz", type=float, default=2.6, help="core clock for the peak (this VM reports 2.6)")
    p.add_argument("--_child", choices=MODES + ("bmm",), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child == "bmm":
        print(json.dumps([_bmm_gflops(1), _bmm_gflops(2)]))
        return
    if args._child:
        print(json.dumps(_child(args._child)))
        return

    def child(mode: str):
        out = subprocess.run([sys.executable, __file__, "--_child", mode], capture_output=True, text=True,
                             check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    best = dict.fromkeys(MODES, 0.0)
    for _ in range(args.rounds):
        for mode in MODES:
            best[mode] = max(best[mode], child(mode))
    bmm1, bmm2 = child("bmm")
    peak = 32 * args.ghz
    print(f"\nCritic ensemble forward + backward (10 critics, batch {BATCH}), compiled, best of {args.rounds}\n")
    print("| way | ensemble fwd+bwd/s | x serial 1 thread |")
    print("|---|---|---|")
    for mode in MODES:
        print(f"| {mode} | {best[mode]:.1f} | {best[mode] / best['serial 1']:.2f}x |")
    print(f"\nbmm [10, 256, 256]^2: {bmm1:.0f} GFLOP/s on 1 thread ({bmm1 / peak:.0%} of one core's "
          f"{peak:.0f}), {bmm2:.0f} on 2 ({bmm2 / (2 * peak):.0%} of {2 * peak:.0f})")


if __name__ == "__main__":
    main()
