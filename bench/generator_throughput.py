"""Generator forward throughput on this machine: hitgan fp32 / bf16 (and optionally compiled)
against the machine's dense-matmul peak and, when given, the official TF generator.

Run under the shared CPU lock so nothing else competes for the cores, e.g.::

    flock /tmp/hitgan-cpu.lock /work/venv/bin/python bench/generator_throughput.py \
        --presets hit-b-128 --batches 1,8 \
        --official /tmp/hitgan-official --tf-python /work/tfenv/bin/python

Ours and the official model are timed in alternating rounds (ours, official, ours, ...) and the
medians over all rounds are reported. The official model runs in a worker process of the TF
interpreter; its script is written at run time into a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hitgan.models.config import get_preset
from hitgan.models.cost import generator_flops
from hitgan.models.generator import HiTGenerator

OFFICIAL_SIZES = (128, 256, 1024)  # output sizes HiTGenerator(output_size=...) accepts
BATCH1_ONLY = {"hit-b-1024"}  # too slow for larger batches on a small CPU

TF_WORKER = r'''
"""Official HiT generator timing worker: one JSON request per stdin line, one reply per line."""
import json, os, sys, time
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
official, threads = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, official)
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(1)
from models import generators

models, runs = {}, {}

def reply(obj):
    sys.stdout.write("@@" + json.dumps(obj) + "\n")
    sys.stdout.flush()

def timed(fn, n):
    out = []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        fn().numpy()
        wall = time.perf_counter() - t
        out.append((wall, (time.process_time() - c) / wall))
    return out

reply({"tf": tf.__version__, "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")})
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "quit":
        break
    size, batch, latent = req["size"], req["batch"], req["latent"]
    if req["op"] == "setup":
        if size not in models:
            g = generators.HiTGenerator(output_size=size)
            models[size] = (g, tf.function(lambda z, g=g: g(z, training=False)))
        g, fn = models[size]
        z = tf.constant(np.random.default_rng(0).standard_normal((batch, latent), np.float32))
        modes = {"eager": lambda: g(z, training=False), "tf.function": lambda: fn(z)}
        for f in modes.values():  # warm-up: build, trace
            timed(f, 2)
        seconds = {m: min(w for w, _ in timed(f, req["repeats"])) for m, f in modes.items()}
        mode = min(seconds, key=seconds.get)
        runs[(size, batch)] = modes[mode]
        reply({"mode": mode, "seconds": seconds})
    elif req["op"] == "time":
        reply({"times": timed(runs[(size, batch)], req["repeats"])})
'''


class OfficialWorker:
    """The official TF generator in a subprocess of the TF interpreter."""

    def __init__(self, tf_python: str, official: str, threads: int, workdir: str):
        script = Path(workdir) / "official_worker.py"
        script.write_text(TF_WORKER)
        self._stderr = open(Path(workdir) / "official_worker.stderr", "w+")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [tf_python, str(script), official, str(threads)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        self.info = self._read()

    def _read(self) -> dict:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        self._stderr.seek(0)
        tail = self._stderr.read()[-3000:]
        raise RuntimeError(f"official TF worker ({self._proc.args[0]}) exited:\n{tail}")

    def request(self, **req: object) -> dict:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(req) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self._proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self._proc.stdin.close()
        self._proc.wait(timeout=60)
        self._stderr.close()


@dataclass
class Row:
    preset: str
    batch: int
    impl: str  # "ours fp32", "ours bf16", "ours compile fp32", "official tf", ...
    seconds: float  # median seconds per forward
    samples: int  # timed forwards behind the median
    images_per_s: float
    gflops: float  # achieved GFLOP/s (forward FLOPs per image x images/s)
    cpu_per_wall: float  # median process CPU time / wall time: ~threads when nothing competes
    max_abs_diff: float | None = None  # vs ours fp32 on the same z
    fp32_max_abs: float | None = None  # max |output| of ours fp32, the scale of max_abs_diff
    note: str = ""


def matmul_peak(size: int, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """Dense matmul GFLOP/s: the median of 5 timed batches of size x size products."""
    a, b = (torch.randn(size, size).to(dtype) for _ in range(2))
    a @ b
    t = time.perf_counter()
    a @ b
    n = max(1, int(seconds / 5 / max(time.perf_counter() - t, 1e-6)))
    rates = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            a @ b
        rates.append(2 * size**3 * n / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def _timed(fn: Callable[[], object], repeats: int) -> list[tuple[float, float]]:
    """(wall seconds, process CPU seconds / wall seconds) of ``repeats`` calls."""
    out = []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall = time.perf_counter() - t
        out.append((wall, (time.process_time() - c) / wall))
    return out


def _bf16_call(model: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(z)


def _ours(model: HiTGenerator, z: torch.Tensor, compile_: bool
          ) -> dict[str, tuple[Callable[[], torch.Tensor], str]]:
    """Our variants to time: impl name -> (forward, note)."""
    ours: dict[str, tuple[Callable[[], torch.Tensor], str]] = {
        "ours fp32": (lambda: model(z), "eager"),
        "ours bf16": (lambda: _bf16_call(model, z), "autocast bf16"),
    }
    if compile_:
        compiled = torch.compile(model)
        ours["ours compile fp32"] = (lambda: compiled(z), "torch.compile")
        ours["ours compile bf16"] = (lambda: _bf16_call(compiled, z),
                                     "torch.compile + autocast bf16")
    return ours


def bench_preset(name: str, batch: int, repeats: int, rounds: int, compile_: bool,
                 worker: OfficialWorker | None) -> list[Row]:
    """Rows for one preset and batch; ours and official alternate for ``rounds`` rounds."""
    cfg = get_preset(name).generator
    torch.manual_seed(0)
    model = HiTGenerator(cfg).eval()
    z = torch.randn(batch, cfg.latent_dim, generator=torch.Generator().manual_seed(1))
    ours = _ours(model, z, compile_)
    notes = {k: note for k, (_, note) in ours.items()}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in ours}
    request = {"size": cfg.resolution, "batch": batch, "latent": cfg.latent_dim,
               "repeats": repeats}
    if worker is not None and cfg.resolution not in OFFICIAL_SIZES:
        worker = None
    with torch.inference_mode():
        ref = model(z).float()
        diffs = {k: (fn().float() - ref).abs().max().item()  # warm-up (compile), output check
                 for k, (fn, _) in ours.items() if k != "ours fp32"}
        if worker is not None:
            setup = worker.request(op="setup", **request)
            seconds = setup["seconds"]
            notes["official tf"] = (f"{setup['mode']} (best of {repeats}: eager "
                                    f"{seconds['eager']:.3f}s, tf.function "
                                    f"{seconds['tf.function']:.3f}s)")
            times["official tf"] = []
        for _ in range(rounds):
            for key, (fn, _) in ours.items():
                times[key] += _timed(fn, repeats)
            if worker is not None:
                reply = worker.request(op="time", **request)
                times["official tf"] += [(w, u) for w, u in reply["times"]]
    flops, scale = generator_flops(cfg), ref.abs().max().item()
    rows = []
    for key, ts in times.items():
        sec = statistics.median(w for w, _ in ts)
        rows.append(Row(name, batch, key, sec, len(ts), batch / sec, flops * batch / sec / 1e9,
                        statistics.median(u for _, u in ts), diffs.get(key),
                        scale if key in diffs else None, notes[key]))
    return rows


def machine_info() -> dict[str, object]:
    model = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                     model)
    return {"cpu": model, "cpus": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "env": {k: v for k, v in os.environ.items()
                    if k.startswith(("MALLOC_", "OMP_", "KMP_", "DNNL_", "ONEDNN_"))
                    or k == "LD_PRELOAD"}}


RATIOS = (("ours fp32", "official tf"), ("ours bf16", "official tf"), ("ours bf16", "ours fp32"),
          ("ours compile fp32", "ours fp32"), ("ours compile bf16", "ours fp32"))


def ratios(rows: list[Row]) -> list[str]:
    """Images/s ratios per preset and batch: ours vs official, bf16 and compiled vs fp32."""
    by = {(r.preset, r.batch, r.impl): r.images_per_s for r in rows}
    out = []
    for preset, batch in dict.fromkeys((r.preset, r.batch) for r in rows):
        parts = [f"{a} / {b} = {by[preset, batch, a] / by[preset, batch, b]:.2f}x"
                 for a, b in RATIOS if (preset, batch, a) in by and (preset, batch, b) in by]
        out.append(f"{preset} batch {batch}: " + "; ".join(parts))
    return out


def format_table(rows: list[Row], peaks: dict[str, float]) -> str:
    head = ("| preset | batch | impl | ms/forward | images/s | GFLOP/s | % of matmul peak | "
            "max abs diff vs fp32 (max abs fp32 out) | samples | CPU/wall | note |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        peak = peaks["bf16"] if "bf16" in r.impl else peaks["fp32"]
        diff = "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.2e} ({r.fp32_max_abs:.2e})"
        lines.append(f"| {r.preset} | {r.batch} | {r.impl} | {r.seconds * 1e3:.1f} | "
                     f"{r.images_per_s:.2f} | {r.gflops:.1f} | {100 * r.gflops / peak:.0f}% | "
                     f"{diff} | {r.samples} | {r.cpu_per_wall:.2f} | {r.note} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="hit-tiny-32,hit-small-64,hit-b-128",
                   help="comma-separated presets (hit-b-1024 runs at batch 1 only)")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--repeats", type=int, default=3, help="timed forwards per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating ours/official rounds")
    p.add_argument("--compile", action="store_true", help="add torch.compile rows")
    p.add_argument("--freezing", action="store_true",
                   help="with --compile: torch._inductor.config.freezing = True")
    p.add_argument("--matmul-size", type=int, default=2048, help="side of the peak matmuls")
    p.add_argument("--official", help="root of a google-research/hit-gan checkout")
    p.add_argument("--tf-python", help="python of a venv with tensorflow-cpu and tf-keras")
    p.add_argument("--json", help="also write the rows and machine info here")
    args = p.parse_args(argv)
    if (args.official is None) != (args.tf_python is None):
        p.error("--official and --tf-python go together")
    if args.official and not (Path(args.official) / "models" / "generators.py").is_file():
        p.error(f"--official {args.official}: no models/generators.py there; give the root of "
                "a google-research/hit-gan checkout")
    if args.tf_python and not Path(args.tf_python).is_file():
        p.error(f"--tf-python {args.tf_python}: no such file")
    if args.freezing and not args.compile:
        p.error("--freezing needs --compile")
    for opt in ("repeats", "rounds", "matmul_size"):
        if getattr(args, opt) < 1:
            p.error(f"--{opt.replace('_', '-')} must be >= 1")
    args.presets = [n.strip() for n in args.presets.split(",")]
    try:
        for name in args.presets:
            get_preset(name)
        args.batches = [int(b) for b in args.batches.split(",")]
    except ValueError as e:
        p.error(f"--presets/--batches: {e}")
    if any(b < 1 for b in args.batches):
        p.error(f"--batches {args.batches}: batch sizes must be >= 1")
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    """Run the benchmark, print the table and ratios; returns the rows."""
    args = parse_args(argv)
    info = machine_info()
    if args.freezing:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    peaks = {"fp32": matmul_peak(args.matmul_size, torch.float32),
             "bf16": matmul_peak(args.matmul_size, torch.bfloat16)}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="hitgan-bench-") as tmp:
        worker = (OfficialWorker(args.tf_python, args.official, torch.get_num_threads(), tmp)
                  if args.official else None)
        if worker is not None:
            info["tensorflow"] = (f"{worker.info['tf']} (intra-op threads "
                                  f"{torch.get_num_threads()}, inter-op 1, oneDNN opts "
                                  f"{worker.info['onednn_opts']})")
        try:
            for name in args.presets:
                for batch in args.batches:
                    if name in BATCH1_ONLY and batch > 1:
                        print(f"skip {name} at batch {batch}: batch 1 only", file=sys.stderr)
                        continue
                    rows += bench_preset(name, batch, args.repeats, args.rounds, args.compile,
                                         worker)
        finally:
            if worker is not None:
                worker.close()
    print(f"machine: {info['cpu']}, {info['cpus']} CPUs; torch {info['torch']} "
          f"({info['torch_threads']} threads)"
          + (f"; tensorflow {info['tensorflow']}" if "tensorflow" in info else "")
          + (f"; env {info['env']}" if info["env"] else ""))
    print(f"dense matmul {args.matmul_size}^2: fp32 {peaks['fp32']:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s\n")
    print(format_table(rows, peaks))
    print("\nratios (images/s):")
    for line in ratios(rows):
        print("  " + line)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": info, "matmul_gflops": peaks, "argv": sys.argv[1:] if argv is None
             else argv, "rows": [asdict(r) for r in rows]}, indent=2))
    return rows


if __name__ == "__main__":
    main()
