"""Where bfloat16 autocast pays off in training: CUDA, or a CPU with native bfloat16 instructions."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


def autocast_enabled(device: torch.device, wanted: bool) -> bool:
    """True when ``wanted`` and ``device`` runs bfloat16 fast (CUDA, or a CPU with AVX512-BF16 / AMX)."""
    if not wanted:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and _cpu_has_bf16()


@functools.cache
def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
