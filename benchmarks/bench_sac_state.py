"""W1 learner throughput: SERL state SAC, this package vs stock TorchRL, same nets, same run.

obs 10, action 4, critic ensemble 10 (target min over a subset of 2), hidden [256, 256] with
LayerNorm, batch 256. For each implementation and compile mode it reports critic updates/s,
UTD-8 learner steps/s (8 critic updates + 1 actor/temperature update), compile time and peak
memory. Eager and compiled runs each get a fresh subprocess holding all implementations; their
throughput is timed in interleaved short windows (10 critic updates, then 1 learner step, per
implementation per round) and each keeps its best window, so all see the same machine load.
Compile time and peak memory (RSS growth on CPU, peak allocation on CUDA, over build + warm-up)
come from one more subprocess per implementation holding it alone.
Each update samples a fresh batch from a 20k-transition tensordict (as a replay buffer does).

    python benchmarks/bench_sac_state.py                      # CPU, eager and compiled
    python benchmarks/bench_sac_state.py --no-compile --rounds 4
    python benchmarks/bench_sac_state.py --device cuda --cudagraphs --bf16

Implementations:
  serl        SERLSACLoss: vectorised EnsembleQValue, only the 2 drawn target critics run,
              critic-only update (loss_critic), no td_error, fused Adam (make_optimizer).
  stock-redq  torchrl REDQLoss(num_qvalue_nets=10, sub_sample_len=2): one fused vmap over
              online/target/actor critics; its forward is the only entry point, so every
              critic update also computes the actor and temperature losses.
  stock-sac   torchrl SACLoss(num_qvalue_nets=10): critic update through qvalue_v2_loss
              (critic-only, min over all 10 target critics, SACLoss has no subset).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

IMPLS = ("serl", "stock-redq", "stock-sac")
OBS, ACT, N_CRITICS, SUBSET, HIDDEN = 10, 4, 10, 2, (256, 256)


def _storage(batch: int, device, size: int = 20_000):
    import torch
    from tensordict import TensorDict

    g = torch.Generator().manual_seed(0)
    td = TensorDict(
        observation=torch.randn(size, OBS, generator=g),
        action=torch.rand(size, ACT, generator=g) * 2 - 1,
        next=TensorDict(
            observation=torch.randn(size, OBS, generator=g),
            reward=torch.randn(size, 1, generator=g),
            done=torch.zeros(size, 1, dtype=torch.bool),
            terminated=torch.zeros(size, 1, dtype=torch.bool),
            batch_size=[size],
        ),
        batch_size=[size],
    ).to(device)

    def sample():
        # A fresh tensordict per update, as a replay buffer gives.
        return td[torch.randint(size, (batch,), device=device)]

    return sample


def _stock_nets(device):
    from tensordict.nn import TensorDictModule
    from torch import nn
    from torchrl.modules import MLP

    from torchrl_serl.modules import make_sac_actor

    actor = make_sac_actor(OBS, ACT, hidden=HIDDEN, device=device)
    mlp = MLP(
        in_features=OBS + ACT,
        out_features=1,
        num_cells=list(HIDDEN),
        activation_class=nn.Tanh,
        norm_class=nn.LayerNorm,
        norm_kwargs=[{"normalized_shape": h} for h in HIDDEN],
    )
    critic = TensorDictModule(mlp, in_keys=["observation", "action"], out_keys=["state_action_value"]).to(device)
    return actor, critic


def _build(impl: str, device, capturable: bool = False):
    """(loss, critic_step(td), actor_step(td), soft_update) for one implementation."""
    import torch
    from torchrl.objectives import REDQLoss, SACLoss, SoftUpdate

    from torchrl_serl.modules import make_sac_actor, make_sac_critic
    from torchrl_serl.objectives.sac import SERLSACLoss
    from torchrl_serl.optim import make_optimizer

    if impl == "serl":
        loss = SERLSACLoss(
            make_sac_actor(OBS, ACT, hidden=HIDDEN, device=device),
            make_sac_critic(OBS, ACT, num_critics=N_CRITICS, hidden=HIDDEN),
            critic_subset=SUBSET,
            check_inputs=False,
        ).to(device)
        loss.make_value_estimator(gamma=0.99)
        critic_opt = make_optimizer(loss.qvalue_network_params.values(True, True), lr=3e-4, capturable=capturable)
        actor_opt = make_optimizer(
            [*loss.actor_network_params.values(True, True), loss.log_alpha], lr=3e-4, capturable=capturable
        )
        critic_loss, actor_loss = loss.loss_critic, loss.loss_actor_alpha
        actor_keys = ("loss_actor", "loss_alpha")
    else:
        actor, critic = _stock_nets(device)
        if impl == "stock-redq":
            loss = REDQLoss(actor, critic, num_qvalue_nets=N_CRITICS, sub_sample_len=SUBSET,
                            loss_function="l2", alpha_init=0.01, target_entropy=-ACT / 2)
            critic_loss = actor_loss = loss
        else:
            loss = SACLoss(actor, critic, num_qvalue_nets=N_CRITICS, loss_function="l2",
                           alpha_init=0.01, target_entropy=-ACT / 2)

            def critic_loss(td):
                return {"loss_qvalue": loss.qvalue_v2_loss(td)[0]}

            actor_loss = loss
        loss = loss.to(device)
        loss.make_value_estimator(gamma=0.99)
        critic_opt = torch.optim.Adam(loss.qvalue_network_params.values(True, True), lr=3e-4, capturable=capturable)
        actor_opt = torch.optim.Adam(
            [*loss.actor_network_params.values(True, True), loss.log_alpha], lr=3e-4, capturable=capturable
        )
        actor_keys = ("loss_actor", "loss_alpha")
    return loss, critic_loss, actor_loss, actor_keys, critic_opt, actor_opt, SoftUpdate(loss, tau=0.005)


def _make_runner(impl: str, args, device, sample):
    """Builds, compiles and warms one implementation; returns its update functions and costs."""
    import torch

    from tensordict import TensorDict
    from tensordict.nn import CudaGraphModule

    loss, critic_loss, actor_loss, actor_keys, copt, aopt, updater = _build(impl, device, args.cudagraphs)
    if args.compile:
        critic_loss = torch.compile(critic_loss)
        actor_loss = torch.compile(actor_loss)

    def autocast():
        if args.bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return torch.autocast(device.type, enabled=False)

    def critic_body(td):
        with autocast():
            loss_q = critic_loss(td)["loss_qvalue"]
        copt.zero_grad(set_to_none=True)
        loss_q.backward()
        copt.step()
        updater.step()
        return TensorDict(loss_qvalue=loss_q.detach())

    def actor_body(td):
        with autocast():
            out = actor_loss(td)
            total = sum(out[k] for k in actor_keys)
        aopt.zero_grad(set_to_none=True)
        total.backward()
        aopt.step()
        return TensorDict(loss=total.detach())

    if args.cudagraphs:  # each whole update (loss, backward, Adam, target update) as one CUDA graph
        critic_body = CudaGraphModule(critic_body, warmup=2, in_keys=[], out_keys=[])
        actor_body = CudaGraphModule(actor_body, warmup=2, in_keys=[], out_keys=[])

    def critic_update():
        critic_body(sample())

    def actor_update():
        actor_body(sample())

    def learner_step():
        for _ in range(args.utd):
            critic_update()
        actor_update()

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(3):  # first calls compile (and record the CUDA graphs)
        critic_update()
        actor_update()
    _sync(device)
    warmup_s = time.perf_counter() - t0
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda"
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    )
    return critic_update, learner_step, {"impl": impl, "compiled": bool(args.compile),
                                         "warmup_s": warmup_s, "peak_mib": peak}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _run_mode(args) -> list[dict]:
    """All implementations in one process, timed in interleaved windows.

    The machine is shared and its load drifts over minutes: alternating short windows between
    implementations gives each the same conditions, and keeping each one's best window (as
    timeit keeps its minimum) sheds the windows where a neighbour took the cores.
    """
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    sample = _storage(args.batch, device)
    runners = [_make_runner(impl, args, device, sample) for impl in args.impl]
    best = [{"critic_updates_s": 0.0, "learner_steps_s": 0.0} for _ in runners]
    for _ in range(args.rounds):
        for (critic_update, learner_step, _), b in zip(runners, best):
            t = time.perf_counter()
            for _ in range(10):
                critic_update()
            _sync(device)
            b["critic_updates_s"] = max(b["critic_updates_s"], 10 / (time.perf_counter() - t))
            t = time.perf_counter()
            learner_step()
            _sync(device)
            b["learner_steps_s"] = max(b["learner_steps_s"], 1 / (time.perf_counter() - t))
    return [{**info, **b} for (_, _, info), b in zip(runners, best)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=8,
                   help="interleaved rounds; each times 10 critic updates and 1 learner step per impl")
    p.add_argument("--utd", type=int, default=8)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="only compiled (--compile) or only eager (--no-compile); default both")
    p.add_argument("--cudagraphs", action="store_true",
                   help="record each whole update as one CUDA graph (tensordict CudaGraphModule), eager or compiled")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the losses")
    p.add_argument("--impl", choices=IMPLS, nargs="+", default=list(IMPLS))
    p.add_argument("--no-alone", action="store_true",
                   help="skip the one-implementation runs: compile time from the shared run, no peak memory")
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        print(json.dumps(_run_mode(args)))
        return

    modes = [False, True] if args.compile is None else [args.compile]

    def child(impls, compiled, rounds):
        cmd = [sys.executable, __file__, "--_child", "--impl", *impls, "--device", args.device,
               "--batch", str(args.batch), "--rounds", str(rounds), "--utd", str(args.utd),
               "--threads", str(args.threads), "--compile" if compiled else "--no-compile"]
        cmd += ["--cudagraphs"] * args.cudagraphs + ["--bf16"] * args.bf16
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{impls} compiled={compiled} failed")
        return json.loads(out.stdout.strip().splitlines()[-1])

    rows = []
    for compiled in modes:
        timed = child(args.impl, compiled, args.rounds)
        for row in timed:
            # Compile time and peak memory from a process holding this implementation alone.
            if args.no_alone:
                row.update(peak_mib=float("nan"))
            else:
                alone = child([row["impl"]], compiled, 0)[0]
                row.update(warmup_s=alone["warmup_s"], peak_mib=alone["peak_mib"])
            rows.append(row)
        print(f"done: compiled={compiled}", file=sys.stderr)

    def ratio(row, key):
        # Against the fastest stock implementation, compiled when compiled runs exist.
        stock = [r for r in rows if r["impl"] != "serl"]
        stock = [r for r in stock if r["compiled"]] or stock
        if not stock:
            return "-"
        return f"{row[key] / max(r[key] for r in stock):.2f}x"

    mem = "peak GPU MiB" if args.device.startswith("cuda") else "peak RSS delta MiB"
    print(f"\nW1 state SAC, batch {args.batch}, device {args.device}, threads {args.threads}, "
          f"bf16={args.bf16}, cudagraphs={args.cudagraphs}\n")
    print(f"| impl | compiled | critic updates/s | vs best stock | UTD-{args.utd} learner steps/s | "
          f"vs best stock | warm-up/compile s | {mem} |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['impl']} | {r['compiled']} | {r['critic_updates_s']:.1f} | {ratio(r, 'critic_updates_s')} | "
              f"{r['learner_steps_s']:.2f} | {ratio(r, 'learner_steps_s')} | {r['warmup_s']:.1f} | {r['peak_mib']:.0f} |")
    print("\nRatios are against the fastest stock implementation (compiled, when compiled rows exist).")


if __name__ == "__main__":
    main()
