"""What the CPU is good at: native bf16 matrix units, and how many threads each training process should use."""

from __future__ import annotations

import os

import torch


def has_native_bf16() -> bool:
    """True where bf16 matrix multiplies run in hardware (AMX-BF16 tiles, Intel Sapphire Rapids and later).

    Elsewhere CPU autocast still runs in bf16, but oneDNN emulates it: on an AVX2-only CPU a bf16 linear layer
    measured 7x slower than fp32 (docs/BENCHMARKS.md), so bf16 is only chosen automatically where it is native.
    """
    is_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(is_amx is not None and is_amx())


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else `os.cpu_count()`)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_process(requested: int | None = None) -> int | None:
    """The intra-op thread count for this process, or `None` to keep PyTorch's own choice.

    `requested` wins. Otherwise, with several processes on this machine (`torchrun`, `accelerate launch`), each gets
    an equal share of the cores, since PyTorch would give every one of them all the cores and oversubscribe them;
    with one process PyTorch's default (one thread per physical core) is already right.
    """
    if requested is not None:
        return requested
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local_processes > 1:
        return max(1, available_cores() // local_processes)
    return None


__all__ = ["available_cores", "has_native_bf16", "threads_per_process"]
