"""RandomShift throughput: vectorised gather vs a per-sample torchvision loop, same run, same inputs.

    python benchmarks/bench_random_shift.py [--batch 256] [--cameras 2] [--size 128] [--repeats 20] [--device cpu]

Prints images/s (one image = one camera of one sample) for uint8 and float32 inputs, plus the
replay storage bytes per transition with and without frame dedup (uint8, 2 cameras).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from tensordict import TensorDict
from torchrl.data import LazyMemmapStorage, TensorDictReplayBuffer
from torchvision.transforms import v2

from torchrl_serl.data.pixel_storage import FrameDedupReplayBuffer
from torchrl_serl.envs.transforms.random_shift import RandomShift


def _time(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def bench_shift(batch: int, cameras: int, size: int, repeats: int, device: str) -> list[tuple[str, str, float]]:
    keys = [f"cam{i}" for i in range(cameras)]
    shift = RandomShift(keys, pad=4, generator=torch.Generator().manual_seed(0))
    crop = v2.RandomCrop(size, padding=4, padding_mode="edge")
    rows = []
    for dtype in (torch.uint8, torch.float32):
        images = torch.randint(0, 256, (batch, cameras, 3, size, size), device=device).to(dtype)
        td = TensorDict({k: images[:, i] for i, k in enumerate(keys)}, batch_size=[batch], device=device)
        n_images = batch * cameras

        def vectorised():
            shift(td.clone(False))

        def per_sample_loop():
            for k in keys:
                torch.stack([crop(img) for img in td[k]])

        for name, fn in (("RandomShift (vectorised)", vectorised), ("torchvision RandomCrop loop", per_sample_loop)):
            rows.append((name, str(dtype).replace("torch.", ""), n_images / _time(fn, repeats, device)))
    return rows


def bytes_per_transition(size: int, cameras: int, n: int = 200) -> tuple[float, float]:
    """(dedup, plain) bytes per stored transition for 100-step episodes written in 50-step batches."""
    keys = [f"cam{i}" for i in range(cameras)]

    def batch(start: int, done_last: bool) -> TensorDict:
        t = torch.arange(start, start + 50)
        frames = lambda ids: (ids[:, None, None, None] % 251).to(torch.uint8).expand(50, 3, size, size).clone()  # noqa: E731
        done = torch.zeros(50, 1, dtype=torch.bool)
        done[-1] = done_last
        td = TensorDict({"observation": torch.zeros(50, 7), "action": torch.zeros(50, 4)}, batch_size=[50])
        td["next"] = TensorDict({"observation": torch.zeros(50, 7), "reward": torch.zeros(50, 1), "done": done}, batch_size=[50])
        for k in keys:
            td[k], td["next", k] = frames(t), frames(t + 1)
        return td

    with tempfile.TemporaryDirectory() as tmp:
        dedup = FrameDedupReplayBuffer(n + n // 50, keys, scratch_dir=f"{tmp}/dedup")
        plain = TensorDictReplayBuffer(storage=LazyMemmapStorage(n, scratch_dir=f"{tmp}/plain"))
        for i in range(n // 50):
            data = batch(1000 * (i // 2) + 50 * (i % 2), done_last=i % 2 == 1)
            dedup.extend(data)
            plain.extend(data)
        return dedup.bytes_per_transition(), plain.storage._storage.bytes() / len(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = bench_shift(args.batch, args.cameras, args.size, args.repeats, args.device)
    print(f"batch {args.batch}, {args.cameras} cameras, {args.size}x{args.size}, device {args.device}, {args.threads} threads")
    print(f"{'method':<30} {'dtype':<8} {'images/s':>12}")
    for name, dtype, ips in rows:
        print(f"{name:<30} {dtype:<8} {ips:>12,.0f}")
    for dtype in ("uint8", "float32"):
        fast, slow = (ips for name, d, ips in rows if d == dtype)
        print(f"speed-up {dtype}: {fast / slow:.1f}x")
    dedup, plain = bytes_per_transition(args.size, args.cameras)
    print(f"bytes/transition (uint8, {args.cameras} cams): frame dedup {dedup:,.0f}, plain TED {plain:,.0f}")


if __name__ == "__main__":
    main()
