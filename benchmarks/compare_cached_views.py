"""DrQ's exact pixel path against cached trunk features, same seeds, on a task that fits a CPU.

The CPU preset replaces SERL's fresh 4 px random shift at every update by a draw among K views
encoded once per frame (``DrQLoss(cached_features=True)``). On the pick-cube tasks the exact path
costs ~25 s per learner step on 2 cores, so the two are compared here on the seeded pixel pointing
task of ``tests/objectives/test_drq_learning.py``: a bright square at a random column of a 64x64
image (both cameras), reward ``-|a_0 - x|``. Both paths share the frozen ResNet-10 (random weights),
the data, the networks' initialisation and the sampling seeds; only the augmentation differs:

- ``exact``: raw frames in the buffer, a fresh random shift of every image at every update and the
  trunk run on it (SERL);
- ``cached K``: each frame encoded once as K views (unshifted + K-1 shifts), one drawn per sample.

Prints the mean pointing error of the deterministic policy on 128 held-out frames every
``--eval-every`` learner steps, per seed, and each path's wall clock.

    OMP_NUM_THREADS=1 python benchmarks/compare_cached_views.py --seeds 0 1 2 --steps 300
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictSequential
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SoftUpdate

from torchrl_serl.data.pixel_storage import FrameDedupReplayBuffer
from torchrl_serl.envs.transforms.trunk_features import TrunkFeatures
from torchrl_serl.modules.drq_networks import make_drq_networks
from torchrl_serl.modules.encoders.cached_features import CachedFeaturesEncoder, feature_key
from torchrl_serl.objectives.drq import DrQLoss
from torchrl_serl.training.config import DrQConfig
from torchrl_serl.training.updater import SACUpdater, make_sac_optimizers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "objectives"))
from test_drq_learning import CAMS, SIZE, frames, transitions  # noqa: E402  (the task of the CI learning test)

FRAMES, TEST, BATCH, UTD = 512, 128, 64, 2


def run(path: str, views: int, seed: int, steps: int, eval_every: int, workdir: Path) -> tuple[list, float]:
    """[(learner step, pointing error)] and the learner's wall clock [s] for one path and seed."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    img, target = frames(FRAMES, g)
    test_img, test_target = frames(TEST, g)
    actor, qvalue, encoder = make_drq_networks(image_size=SIZE, num_critics=2, hidden=(64, 64), bottleneck_dim=32)
    data = transitions(img, target, torch.rand(FRAMES, 4, generator=g) * 2 - 1)
    test_td = TensorDict(front=test_img, wrist=test_img, observation=torch.zeros(TEST, 7), batch_size=[TEST])
    sampler_g = torch.Generator().manual_seed(seed + 1)
    if path == "cached":
        features = TrunkFeatures(encoder.trunk("front"), CAMS, SIZE, num_views=views, seed=seed)
        data = features.encode_transitions(data).exclude(*CAMS, *[("next", c) for c in CAMS])
        test_td = features.encode_transitions(test_td.set("next", test_td.clone())).select(
            *[feature_key(c) for c in CAMS], "observation")
        buffer = FrameDedupReplayBuffer(2 * FRAMES + 1, [feature_key(c) for c in CAMS], workdir / f"rb{seed}",
                                        generator=sampler_g, batch_size=BATCH)
        policy = TensorDictSequential(CachedFeaturesEncoder(encoder), actor)
    else:
        buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(FRAMES), batch_size=BATCH)  # global RNG
        policy = TensorDictSequential(encoder, actor)
    buffer.extend(data)
    loss = DrQLoss(actor, qvalue, encoder, cached_features=path == "cached",
                   generator=torch.Generator().manual_seed(seed + 2))
    loss.make_value_estimator(gamma=0.9)
    cfg = DrQConfig(actor_lr=1e-3, critic_lr=1e-3)
    updater = SACUpdater(loss, make_sac_optimizers(loss, cfg), SoftUpdate(loss, tau=0.01), utd_ratio=UTD)

    def error() -> float:
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            return float((policy(test_td.clone())["action"][:, 0] - test_target).abs().mean())

    curve, learner_s = [(0, error())], 0.0
    for step in range(1, steps + 1):
        t = time.perf_counter()
        updater.update(buffer.sample(UTD * BATCH))
        learner_s += time.perf_counter() - t
        if step % eval_every == 0:
            curve.append((step, error()))
    return curve, learner_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300, help="learner steps (each UTD 2 critic updates of batch 64)")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--views", type=int, default=2, help="K of the cached path (the CPU preset: 2)")
    p.add_argument("--csv", type=Path, default=None, help="also write path,seed,step,error rows here")
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for path in ("exact", "cached"):
                curve, seconds = run(path, args.views, seed, args.steps, args.eval_every, Path(tmp))
                name = path if path == "exact" else f"cached K={args.views}"
                print(f"seed {seed} {name:<11} {seconds:7.1f} s  pointing error: "
                      + " ".join(f"{s}:{e:.3f}" for s, e in curve), flush=True)
                rows += [(name, seed, s, e) for s, e in curve]
    if args.csv:
        with args.csv.open("w", newline="") as f:
            csv.writer(f).writerows([("path", "seed", "learner_step", "pointing_error"), *rows])


if __name__ == "__main__":
    main()
