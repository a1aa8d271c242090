"""Pieces every benchmark shares: the machine's matmul peak, timing, memory, machine info."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from hitgan.runtime import cache_large_allocations

ROOT = Path(__file__).resolve().parents[1]
LOCK_HINT = "run it on an otherwise idle machine: nothing else may compete for the cores"


def matmul_peak(size: int, dtype: torch.dtype, device: str = "cpu",
                seconds: float = 0.5) -> float:
    """Dense matmul GFLOP/s: the median of 5 timed batches of size x size products."""
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    t = time.perf_counter()
    a @ b
    sync()
    n = max(1, int(seconds / 5 / max(time.perf_counter() - t, 1e-6)))
    rates = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            a @ b
        sync()
        rates.append(2 * size**3 * n / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # precision name -> dtype


def matmul_peaks(size: int, device: str = "cpu", precisions: tuple[str, ...] = tuple(DTYPES)
                 ) -> dict[str, float]:
    return {p: matmul_peak(size, DTYPES[p], device) for p in precisions}


def timed(fn: Callable[[], object], repeats: int, device: str = "cpu"
          ) -> list[tuple[float, float]]:
    """(wall seconds, process CPU seconds / wall seconds) of ``repeats`` calls."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    out = []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall = time.perf_counter() - t
        out.append((wall, (time.process_time() - c) / wall))
    return out


def reset_peak_memory(device: str = "cpu") -> None:
    """Start a new peak: the CUDA allocator's, or Linux's VmHWM (``clear_refs`` 5)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_memory_bytes(device: str = "cpu") -> int | None:
    """Peak CUDA memory allocated, or the process's peak resident set (VmHWM) since the last
    reset; None where neither is available."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device)
    return proc_kb_field("/proc/self/status", "VmHWM")


def proc_kb_field(path: str, key: str) -> int | None:
    """A kB field of a /proc file such as /proc/self/status or /proc/meminfo (Linux), in
    bytes; None elsewhere."""
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None


def _revision() -> str:
    """The hitgan checkout's commit, ``+dirty`` when hitgan/ has uncommitted changes."""
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "hitgan"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def machine_info(device: str = "cpu") -> dict[str, object]:
    model = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                     model)
    info: dict[str, object] = {
        "hitgan": _revision(), "cpu": model, "cpus": os.cpu_count(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "device": device,
        "env": {k: v for k, v in os.environ.items()
                if k.startswith(("MALLOC_", "OMP_", "KMP_", "DNNL_", "ONEDNN_"))
                or k == "LD_PRELOAD"}}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def describe(info: dict[str, object]) -> str:
    """One line naming the code, machine and settings of a run."""
    return (f"hitgan {info['hitgan']}; machine: {info['cpu']}, {info['cpus']} CPUs"
            + (f", {info['gpu']}" if "gpu" in info else "")
            + f"; torch {info['torch']} ({info['torch_threads']} threads)"
            + f"; malloc caching {'on' if info.get('malloc_cache') else 'off'}"
            + (f"; tensorflow {info['tensorflow']}" if "tensorflow" in info else "")
            + (f"; env {info['env']}" if info["env"] else ""))


def start_run(device: str = "cpu", malloc_cache: bool = True) -> dict[str, object]:
    """Apply the allocator setting the ``hitgan`` command applies (hitgan/runtime.py) when
    ``malloc_cache``, and describe the run: ``machine_info`` plus whether the setting holds."""
    applied = cache_large_allocations() if malloc_cache else False
    return {**machine_info(device), "malloc_cache": applied}


def resident_bytes(device: str = "cpu") -> int | None:
    """Memory held now: CUDA memory allocated, or the process's resident set (VmRSS)."""
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated(device)
    return proc_kb_field("/proc/self/status", "VmRSS")


def release_memory() -> None:
    """Collect garbage and hand glibc's free pages back to the OS (``malloc_trim``), so that
    the next measurement's peak does not stack on memory cached for an earlier one."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio_lines(groups: dict[str, dict[str, float]], pairs: tuple[tuple[str, str], ...]
                ) -> list[str]:
    """``label: a / b = 1.23x; ...`` for each group (label -> {impl: images/s}) and each pair
    of impls the group has; groups with none are left out."""
    out = []
    for label, by in groups.items():
        parts = [f"{a} / {b} = {by[a] / by[b]:.2f}x" for a, b in pairs if a in by and b in by]
        if parts:
            out.append(f"{label}: " + "; ".join(parts))
    return out


def parse_presets(p: argparse.ArgumentParser, text: str) -> list[str]:
    """A comma-separated ``--presets`` value, every name checked."""
    from hitgan.models.config import get_preset

    names = [n.strip() for n in text.split(",")]
    try:
        for name in names:
            get_preset(name)
    except ValueError as e:
        p.error(f"--presets: {e}")
    return names


def fail(message: str) -> None:
    """Exit with a one-line error (bad options found after parsing)."""
    print(f"bench: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def add_machine_options(p: argparse.ArgumentParser, device: bool = True) -> None:
    """The options every timing benchmark shares."""
    p.add_argument("--matmul-size", type=int, default=2048,
                   help="side of the dense matmuls that measure the machine's peak GFLOP/s")
    if device:
        p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    p.add_argument("--no-malloc-cache", action="store_true",
                   help="keep glibc's default allocator settings (see hitgan/runtime.py)")


def check_machine_options(p: argparse.ArgumentParser, args: argparse.Namespace,
                          counts: tuple[str, ...] = ()) -> None:
    """Refuse counts below 1 (``counts`` plus --matmul-size) and an unusable --device."""
    for opt in (*counts, "matmul_size"):
        if getattr(args, opt) < 1:
            p.error(f"--{opt.replace('_', '-')} {getattr(args, opt)}: must be >= 1")
    device = getattr(args, "device", "cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        p.error(f"--device {device}: use cpu or cuda[:i]")
    if device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {device}: CUDA is not available here")
