"""W2 pixel learner benchmark: this package's DrQ vs stock TorchRL SAC fed by the same encoder.

Workload (issue 7, W2): two 128x128x3 uint8 cameras + 7-D state, frozen ResNet-10 (GroupNorm) trunk,
learned spatial embeddings (8) -> 256 -> LayerNorm -> tanh per camera, critic ensemble 10 (subset 2),
hidden [256, 256], random-shift augmentation (4 px) of obs and next obs. One learner step is SERL's
pixel schedule: 3 critic-only updates + 1 full update (critic, actor, temperature), each followed by
its optimizer steps and the soft target update.

- ``serl`` (this package): :class:`~torchrl_serl.objectives.drq.DrQLoss`; the frozen trunk runs once
  per augmented image (obs and next obs of both cameras in one ``no_grad`` call) and its features
  feed critic, target critic and actor; batched critic ensemble.
- ``stock``: :class:`torchrl.objectives.SACLoss` (``num_qvalue_nets=10``) with the encoder inside
  the actor and the critic networks, as a TorchRL user wires it (the loss then runs the encoder in
  every network call, and vmaps the 10 critics with their own encoder copies); augmentation applied
  to the batch before the loss; critic-only updates with ``SACLoss.qvalue_v2_loss``.
- ``cached`` (this package, ``--drq.feature_views K``): the frozen trunk ran once per frame when
  the frame was collected, as ``K`` views stored as float16 features; the loss draws one cached
  view per sample and trains the head only (no trunk call in the learner). Not SERL's exact
  augmentation: see docs/results.md. Its row also reports the bytes a stored transition takes
  (``FrameDedupReplayBuffer``: each frame's features once).
- ``stock-shared``: the same ``SACLoss`` on embeddings from one encoder call per batch outside the
  loss (obs with gradients, next obs without; the actor reads a detached copy): the work sharing a
  TorchRL user can wire by hand, so the frozen trunk also runs once per augmented image. Ratios
  are against the fastest stock wiring.

Every configuration runs in a fresh subprocess (clean peak-memory and compile figures). Example::

    python benchmarks/bench_drq_pixels.py                      # CPU, batch 64 and 256, eager+compiled
    python benchmarks/bench_drq_pixels.py --device cuda --bf16 --cudagraphs
    python benchmarks/bench_drq_pixels.py --batch-sizes 4 --steps 1 --warmup 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn

IMAGE_SIZE = 128
PROPRIO_DIM = 7
ACTION_DIM = 4
NUM_CRITICS = 10
CAMERAS = ("front", "wrist")


def make_pool(batch: int, n: int, device: torch.device) -> list[TensorDict]:
    """``n`` distinct synthetic pixel transition batches ``[batch]`` (uint8 images, channels first)."""
    g = torch.Generator().manual_seed(0)

    def obs():
        return {
            **{c: torch.randint(0, 256, (batch, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8, generator=g) for c in CAMERAS},
            "observation": torch.randn(batch, PROPRIO_DIM, generator=g),
        }

    pool = []
    for _ in range(n):
        td = TensorDict(
            {
                **obs(),
                "action": torch.rand(batch, ACTION_DIM, generator=g) * 2 - 1,
                "next": TensorDict(
                    {
                        **obs(),
                        "reward": torch.randn(batch, 1, generator=g),
                        "done": torch.zeros(batch, 1, dtype=torch.bool),
                        "terminated": torch.zeros(batch, 1, dtype=torch.bool),
                    },
                    batch_size=[batch],
                ),
            },
            batch_size=[batch],
        )
        pool.append(td.to(device))
    return pool


def augment_batch(td: TensorDict, pad: int = 4) -> TensorDict:
    """Random shift of every image of obs and next obs (what a stock pipeline does before the loss)."""
    from torchrl_serl.modules.augmentation import random_shift

    td = td.clone(False)
    for c in CAMERAS:
        both = random_shift(torch.stack([td[c], td["next", c]]), pad)
        td[c], td["next", c] = both[0], both[1]
    return td


def cached_pool(
    pool: list[TensorDict], num_views: int, channels_last: bool, encode_chunk: int = 8
) -> list[TensorDict]:
    """The pool's batches with each camera's images replaced by float16 trunk features of
    ``num_views`` views (what :class:`~torchrl_serl.envs.transforms.TrunkFeatures` stores), encoded
    ``encode_chunk`` frames per trunk call."""
    from torchrl_serl.modules.encoders import resnet10
    from torchrl_serl.modules.encoders.cached_features import encode_views, feature_key

    trunk = resnet10(channels_last=channels_last).eval().to(pool[0].device)
    out = []
    for td in pool:
        td = td.clone()
        for sub in (td, td["next"]):
            for c in CAMERAS:
                # a few frames per trunk call: one call on a whole batch spends most of its time
                # in the kernel on CPU (page faults of its large activations) and can stall for minutes
                sub[feature_key(c)] = encode_views(trunk, sub.pop(c), num_views, chunk=encode_chunk)
        out.append(td)
    return out


def cached_bytes_per_transition(num_views: int, channels_last: bool) -> float:
    """Bytes per transition of a FrameDedupReplayBuffer holding 1000 steps of cached features."""
    import tempfile

    from torchrl_serl.data.pixel_storage import FrameDedupReplayBuffer
    from torchrl_serl.modules.encoders import resnet10
    from torchrl_serl.modules.encoders.cached_features import feature_key

    feat_shape = (num_views, *resnet10().output_shape(IMAGE_SIZE))
    t = 1000
    frames = {c: torch.zeros(t + 1, *feat_shape, dtype=torch.float16) for c in CAMERAS}
    data = TensorDict(
        {**{feature_key(c): frames[c][:-1] for c in CAMERAS}, "observation": torch.zeros(t, PROPRIO_DIM),
         "action": torch.zeros(t, ACTION_DIM),
         "next": TensorDict({**{feature_key(c): frames[c][1:] for c in CAMERAS},
                             "observation": torch.zeros(t, PROPRIO_DIM), "reward": torch.zeros(t, 1),
                             "done": torch.zeros(t, 1, dtype=torch.bool),
                             "terminated": torch.zeros(t, 1, dtype=torch.bool)}, batch_size=[t])},
        batch_size=[t],
    )
    data["next", "done"][99::100] = True  # 100-step episodes, as the pick tasks
    with tempfile.TemporaryDirectory() as tmp:
        buffer = FrameDedupReplayBuffer(2 * t, [feature_key(c) for c in CAMERAS], tmp)
        buffer.extend(data)
        return buffer.bytes_per_transition()


def build_serl(device, channels_last: bool, capturable: bool, num_views: int = 0):
    from torchrl.objectives import SoftUpdate

    from torchrl_serl.modules.drq_networks import make_drq_networks
    from torchrl_serl.objectives.drq import DrQLoss
    from torchrl_serl.optim import make_optimizer

    actor, qvalue, encoder = make_drq_networks(
        camera_keys=CAMERAS, image_size=IMAGE_SIZE, proprio_dim=PROPRIO_DIM, action_dim=ACTION_DIM,
        encoder="resnet10", num_critics=NUM_CRITICS, channels_last=channels_last, actor_kwargs={"device": device},
    )
    actor, qvalue, encoder = actor.to(device), qvalue.to(device), encoder.to(device)
    loss = DrQLoss(actor, qvalue, encoder, augment=True, critic_subset=2, check_inputs=False,
                   cached_features=num_views > 0)
    loss.make_value_estimator(gamma=0.96)
    critic_params = [*loss.qvalue_network_params.values(True, True)] + [
        p for p in loss.encoder_params.values(True, True) if p.requires_grad
    ]
    opts = {
        "critic": make_optimizer(critic_params, capturable=capturable),
        "actor": make_optimizer(loss.actor_network_params.values(True, True), capturable=capturable),
        "alpha": make_optimizer([loss.log_alpha], capturable=capturable),
    }
    return loss, opts, SoftUpdate(loss, tau=0.005), loss.loss_critic, loss.forward


def _stock_sac(actor_module, critic_module, device):
    """Stock ``SACLoss`` (10 critics, SERL's temperature init and target entropy) around an actor
    module writing ``loc``/``scale`` and a critic module writing ``state_action_value``."""
    from torchrl.modules import ProbabilisticActor, TanhNormal
    from torchrl.objectives import SACLoss

    bounds = {"low": -1.0, "high": 1.0}
    if device.type == "cuda":  # device tensors: a CUDA graph cannot record a host copy
        bounds = {k: torch.tensor(v, device=device) for k, v in bounds.items()}
    actor = ProbabilisticActor(actor_module, in_keys=["loc", "scale"], distribution_class=TanhNormal,
                               distribution_kwargs=bounds).to(device)
    loss = SACLoss(actor, critic_module.to(device), num_qvalue_nets=NUM_CRITICS, alpha_init=0.01,
                   target_entropy=-ACTION_DIM / 2)
    loss.make_value_estimator(gamma=0.96)
    return loss


def _stock_heads(emb: int, actor_key: str):
    """SERL-size heads ([256, 256], LayerNorm, tanh) on ``emb`` embedding features: the actor head
    (``actor_key`` -> ``loc``, ``scale``) and the critic's ``ValueOperator`` (embedding, action)."""
    from torchrl.modules import MLP, NormalParamExtractor, ValueOperator

    mlp_kwargs = {"num_cells": [256, 256], "activation_class": nn.Tanh, "norm_class": nn.LayerNorm,
                  "norm_kwargs": [{"normalized_shape": 256}] * 2}
    actor_head = TensorDictModule(
        nn.Sequential(MLP(in_features=emb, out_features=2 * ACTION_DIM, **mlp_kwargs), NormalParamExtractor()),
        in_keys=[actor_key], out_keys=["loc", "scale"],
    )
    critic_head = ValueOperator(MLP(in_features=emb + ACTION_DIM, out_features=1, **mlp_kwargs),
                                in_keys=["embedding", "action"])
    return actor_head, critic_head


def _stock_encoder():
    from torchrl_serl.modules.encoders import MultiCameraEncoder, resnet10

    return MultiCameraEncoder(resnet10(), camera_keys=CAMERAS, image_size=IMAGE_SIZE, proprio_dim=PROPRIO_DIM)


def build_stock(device, capturable: bool):
    from torchrl.objectives import SoftUpdate

    encoder = _stock_encoder()
    actor_head, critic_head = _stock_heads(encoder.out_features, "embedding")
    loss = _stock_sac(TensorDictSequential(encoder, actor_head), TensorDictSequential(encoder, critic_head), device)
    adam = {"lr": 3e-4, "capturable": capturable}
    opts = {
        "critic": torch.optim.Adam(loss.qvalue_network_params.values(True, True), **adam),
        "actor": torch.optim.Adam([p for p in loss.actor_network_params.values(True, True) if p.requires_grad], **adam),
        "alpha": torch.optim.Adam([loss.log_alpha], **adam),
    }

    def critic_loss(td):
        return {"loss_qvalue": loss.qvalue_v2_loss(td)[0]}

    return loss, opts, SoftUpdate(loss, tau=0.005), critic_loss, loss.forward


def build_stock_shared(device, capturable: bool):
    """Stock ``SACLoss`` on shared embeddings: the encoder runs once per batch *outside* the loss
    (obs with gradients, next obs without), the sharing a TorchRL user can wire by hand. The actor
    reads a detached copy of the embedding (the encoder learns from the critic only, as in SERL)."""
    from torchrl.objectives import SoftUpdate

    encoder = _stock_encoder().to(device)
    actor_head, critic_head = _stock_heads(encoder.out_features, "embedding_detached")
    loss = _stock_sac(actor_head, critic_head, device)
    adam = {"lr": 3e-4, "capturable": capturable}
    opts = {
        "critic": torch.optim.Adam([*loss.qvalue_network_params.values(True, True),
                                    *(p for p in encoder.parameters() if p.requires_grad)], **adam),
        "actor": torch.optim.Adam(loss.actor_network_params.values(True, True), **adam),
        "alpha": torch.optim.Adam([loss.log_alpha], **adam),
    }

    def encode(td):
        encoder(td)
        with torch.no_grad():
            encoder(td["next"])
        for sub in (td, td["next"]):
            sub["embedding_detached"] = sub["embedding"].detach()
        return td

    def critic_loss(td):
        return {"loss_qvalue": loss.qvalue_v2_loss(encode(td))[0]}

    def full_loss(td):
        return loss(encode(td))

    return loss, opts, SoftUpdate(loss, tau=0.005), critic_loss, full_loss


def run_one(args) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    impl, mode, batch = args.run
    batch = int(batch)
    if impl == "serl":  # augments inside the loss
        loss, opts, updater, critic_fn, full_fn = build_serl(device, not args.no_channels_last, args.cudagraphs)
    elif impl == "cached":  # draws a cached view inside the loss
        loss, opts, updater, critic_fn, full_fn = build_serl(device, not args.no_channels_last, args.cudagraphs,
                                                             num_views=args.views)
    elif impl == "stock-shared":
        loss, opts, updater, critic_fn, full_fn = build_stock_shared(device, args.cudagraphs)
    else:
        loss, opts, updater, critic_fn, full_fn = build_stock(device, args.cudagraphs)
    if mode == "compiled":
        critic_fn, full_fn = torch.compile(critic_fn), torch.compile(full_fn)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    pool = make_pool(batch, 4, device)
    if impl == "cached":
        pool = cached_pool(pool, args.views, not args.no_channels_last)
    counter = [0]
    # stock: augmentation before the loss, as a TorchRL pipeline does (inside the graph with CUDA graphs)
    augment = augment_batch if impl.startswith("stock") else (lambda td: td)

    def next_batch():
        td = pool[counter[0] % len(pool)].clone()  # stock SACLoss writes td_error into its input
        counter[0] += 1
        return td if args.cudagraphs else augment(td)

    def step(names, out, keys):
        for n in names:
            opts[n].zero_grad(set_to_none=True)
        sum(out[k] for k in keys).backward()
        for n in names:
            opts[n].step()
        updater.step()
        return TensorDict({k: out[k].detach() for k in keys})

    def critic_update(td):
        with autocast:
            out = critic_fn(augment(td) if args.cudagraphs else td)
        return step(["critic"], out, ["loss_qvalue"])

    def full_update(td):
        with autocast:
            out = full_fn(augment(td) if args.cudagraphs else td)
        return step(["critic", "actor", "alpha"], out, ["loss_qvalue", "loss_actor", "loss_alpha"])

    if args.cudagraphs:  # each whole update (augmentation, loss, backward, Adam, target update) as one CUDA graph
        from tensordict.nn import CudaGraphModule

        critic_update = CudaGraphModule(critic_update, warmup=2, in_keys=[], out_keys=[])
        full_update = CudaGraphModule(full_update, warmup=2, in_keys=[], out_keys=[])

    def learner_step():
        for _ in range(3):
            critic_update(next_batch())
        return full_update(next_batch())

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for i in range(args.warmup):
        learner_step()
        sync()
        if i == 0:
            first_step_s = time.perf_counter() - t0
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        out = learner_step()
    sync()
    elapsed = time.perf_counter() - t0
    steps_per_s = args.steps / elapsed
    result = {
        "impl": impl, "mode": mode, "batch": batch, "steps_per_s": steps_per_s,
        "first_step_s": first_step_s if args.warmup else float("nan"), "warmup_s": warmup_s,
        "loss_qvalue": float(out["loss_qvalue"].detach()),
    }
    if impl == "cached":
        result["bytes_per_transition"] = cached_bytes_per_transition(args.views, not args.no_channels_last)
    if device.type == "cuda":
        result["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_mem_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    parser.add_argument("--impls", nargs="+", default=["serl", "stock"], choices=["serl", "cached", "stock", "stock-shared"])
    parser.add_argument("--views", type=int, default=2, help="cached: trunk views stored per frame (K)")
    parser.add_argument("--steps", type=int, default=3, help="timed learner steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed learner steps (compilation happens here)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast around the losses")
    parser.add_argument("--cudagraphs", action="store_true",
                        help="record each whole update as one CUDA graph (tensordict CudaGraphModule)")
    parser.add_argument("--no-channels-last", action="store_true", help="serl: NCHW trunk instead of channels-last")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per configuration")
    parser.add_argument("--run", nargs=3, metavar=("IMPL", "MODE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cudagraphs and args.warmup < 3:
        parser.error("--cudagraphs needs --warmup >= 3 (the full update is warmed up, then recorded)")
    if args.warmup < 1 and "compiled" in args.modes:
        parser.error("--warmup must be >= 1 with compiled modes (compilation is not timed)")
    if args.run:
        print(json.dumps(run_one(args)))
        return
    rows = []
    for batch in args.batch_sizes:
        for mode in args.modes:
            for impl in args.impls:
                cmd = [sys.executable, __file__, *sys.argv[1:], "--run", impl, mode, str(batch)]
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    rows.append({"impl": impl, "mode": mode, "batch": batch, "error": f"timeout {args.timeout:.0f}s"})
                    continue
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                if proc.returncode or not lines:
                    rows.append({"impl": impl, "mode": mode, "batch": batch, "error": proc.stderr.strip()[-300:]})
                else:
                    rows.append(json.loads(lines[-1]))
                print(rows[-1], file=sys.stderr, flush=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{args.threads} threads"
    print(f"\nW2 DrQ learner steps/s (3 critic + 1 full update), {device}, bf16={args.bf16}, cudagraphs={args.cudagraphs}")
    print(f"{'batch':>5} {'mode':>9} {'impl':>12} {'steps/s':>9} {'x best stock':>12} {'x best stock compiled':>21} "
          f"{'x serl':>7} {'1st step s':>11} {'peak MB':>9} {'B/transition':>12}")
    for row in rows:
        if "error" in row:
            print(f"{row['batch']:>5} {row['mode']:>9} {row['impl']:>12}  ERROR {row['error']}")
            continue
        def best_stock(mode):  # the fastest stock wiring of this batch size in ``mode``
            stock = [r["steps_per_s"] for r in rows if r.get("batch") == row["batch"] and r.get("mode") == mode
                     and r["impl"].startswith("stock") and "error" not in r]
            return f"{row['steps_per_s'] / max(stock):.2f}" if stock else "-"

        ratio, ratio_c = best_stock(row["mode"]), best_stock("compiled")
        exact = [r["steps_per_s"] for r in rows if r.get("batch") == row["batch"] and r.get("mode") == row["mode"]
                 and r["impl"] == "serl" and "error" not in r]
        ratio_serl = f"{row['steps_per_s'] / exact[0]:.1f}" if exact else "-"
        stored = f"{row['bytes_per_transition']:.0f}" if "bytes_per_transition" in row else "-"
        print(
            f"{row['batch']:>5} {row['mode']:>9} {row['impl']:>12} {row['steps_per_s']:>9.4f} {ratio:>12} {ratio_c:>21} "
            f"{ratio_serl:>7} {row['first_step_s']:>11.1f} {row['peak_mem_mb']:>9.0f} {stored:>12}"
        )


if __name__ == "__main__":
    main()
