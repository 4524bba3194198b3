"""Where bfloat16 pays: one answer for the CPU preset and every ``bf16`` option.

bfloat16 autocast halves the cost of the learner's and the trunk's matmuls and convolutions where
the hardware has bf16 kernels, and multiplies it where it has none: torch then emulates them.
Measured 2026-12-06 on a 2-core AMD EPYC (Zen 3, AVX2, no AVX-512), the CPU preset's learner
(cached features, batch 256, 1 thread): 0.68 learner steps/s in float32, 0.068 in bfloat16; the
state learner (W1, compiled, 2 threads): 52.8 critic updates/s in float32, 2.6 in bfloat16.
"""

from __future__ import annotations

import functools
import warnings

import torch


@functools.lru_cache(maxsize=None)
def native_bf16(device_type: str = "cpu") -> bool:
    """Whether bfloat16 matmuls and convolutions have native kernels on ``device_type``.

    CPU: oneDNN's own test (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``: x86 with AVX-512
    BW/VL/DQ, e.g. Intel since Skylake-SP or AMD Zen 4; ARM with BF16); an AVX2-only x86 (AMD
    Zen 3 and older) answers False. CUDA: ``torch.cuda.is_bf16_supported()``.
    """
    if device_type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a torch build without oneDNN: no bf16 kernels either
            return False
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return True


def warn_if_emulated_bf16(device_type: str, option: str) -> None:
    """Warn (``RuntimeWarning``) that ``option`` asks for bfloat16 on hardware that emulates it."""
    if not native_bf16(device_type):
        warnings.warn(
            f"{option}: this {device_type} has no native bfloat16 kernels (on x86, oneDNN needs AVX-512), so "
            f"torch emulates them: about 10-20x slower than float32 on an AVX2 CPU (torchrl_serl/precision.py). "
            f"Leave {option} off on this machine.",
            RuntimeWarning,
            stacklevel=3,
        )
