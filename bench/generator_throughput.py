"""Generator forward throughput on this machine: hitgan fp32 / bf16 (and optionally compiled)
against the machine's dense-matmul peak and, when given, the official TF generator.

Run it on an otherwise idle machine so nothing else competes for the cores, e.g.::

    python -m bench.generator_throughput --presets hit-b-128 --batches 1,8 --compile \\
        --freezing --official OFFICIAL_DIR --tf-python TF_PYTHON

(OFFICIAL_DIR: a checkout of google-research/hit-gan; TF_PYTHON: the Python of a separate
TensorFlow install; docs/performance.md says how to set both up.)

It also times each of the generator's Linear shapes alone, in fp32 and bf16: the GFLOP/s a
generator made only of those matrix products could reach, the ceiling for the achieved GFLOP/s.

Ours and the official model are timed in alternating rounds (ours, official, ours, ...) and the
medians over all rounds are reported. The official model runs in a worker process of the TF
interpreter (bench/official.py). Both processes get the glibc allocator setting that the
``hitgan`` command applies (hitgan/runtime.py) unless ``--no-malloc-cache`` is given.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import (
    DTYPES,
    add_machine_options,
    check_machine_options,
    describe,
    markdown_table,
    matmul_peaks,
    parse_presets,
    peak_memory_bytes,
    ratio_lines,
    reset_peak_memory,
    start_run,
    timed,
)
from bench.official import OFFICIAL_SIZES, OfficialWorker, add_options, check_options
from hitgan.models.config import get_preset
from hitgan.models.cost import generator_flops
from hitgan.models.generator import HiTGenerator
from hitgan.models.layers import ONEDNN_FP32, onednn_linear
from hitgan.sampling import inference_fn

BATCH1_ONLY = {"hit-b-1024"}  # too slow for larger batches on a small CPU


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
    peak_mib: float | None = None  # peak memory while timing this variant (see bench/common.py)
    max_abs_diff: float | None = None  # vs ours fp32 on the same z
    fp32_max_abs: float | None = None  # max |output| of ours fp32, the scale of max_abs_diff
    note: str = ""


def _bf16_call(model: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    with torch.autocast(z.device.type, dtype=torch.bfloat16):
        return model(z)


def _ours(model: HiTGenerator, z: torch.Tensor, compile_: bool, freezing: bool,
          precisions: tuple[str, ...] = ("fp32", "bf16")
          ) -> dict[str, tuple[Callable[[], torch.Tensor], str]]:
    """Our variants to time, in ``precisions``: impl name -> (forward, note)."""
    fp32 = inference_fn(model, "fp32")  # what hitgan generate and serve run
    onednn = ONEDNN_FP32 and z.device.type == "cpu"
    ours: dict[str, tuple[Callable[[], torch.Tensor], str]] = {
        "ours fp32": (lambda: fp32(z), "eager" + (", oneDNN Linear" if onednn else "")),
        "ours bf16": (lambda: _bf16_call(model, z), "autocast bf16"),
    }
    if onednn:
        ours["ours torch-linear fp32"] = (lambda: model(z), "eager, torch's Linear (MKL)")
    if compile_:
        import torch._inductor.config as inductor_config

        compiled = torch.compile(model)

        def frozen(x: torch.Tensor) -> torch.Tensor:
            with inductor_config.patch(freezing=freezing):  # read when a call (re)compiles
                return compiled(x)

        how = "torch.compile" + (" (freezing)" if freezing else "")
        ours["ours compile fp32"] = (lambda: frozen(z), how)
        ours["ours compile bf16"] = (lambda: _bf16_call(frozen, z), how + " + autocast bf16")
    return {k: v for k, v in ours.items() if k.split()[-1] in precisions}


@dataclass
class Ceiling:
    """The generator's Linear layers, each shape timed alone on random data."""
    preset: str
    batch: int
    dtype: str  # "fp32" or "bf16"
    gflop: float  # FLOPs of all Linear calls of one forward, in GFLOP
    seconds: float  # the sum over shapes of calls x median seconds per call
    gflops: float  # gflop / seconds: what a generator of only these products could reach


def linear_shapes(model: HiTGenerator, z: torch.Tensor) -> Counter[tuple[int, int, int]]:
    """(rows, in, out) of every Linear call in one forward, with how often it occurs."""
    shapes: Counter[tuple[int, int, int]] = Counter()

    def record(module: torch.nn.Linear, inputs: tuple[torch.Tensor, ...], _: object) -> None:
        x = inputs[0]
        shapes[(x.numel() // x.shape[-1], module.in_features, module.out_features)] += 1

    hooks = [m.register_forward_hook(record) for m in model.modules()
             if isinstance(m, torch.nn.Linear)]
    try:
        with torch.inference_mode():
            model(z)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def linear_ceiling(name: str, batch: int, shapes: Counter[tuple[int, int, int]],
                   precision: str, repeats: int, device: str) -> Ceiling:
    flops, seconds, dtype = 0.0, 0.0, DTYPES[precision]
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for (rows, cin, cout), calls in shapes.items():
            x, w, b = (torch.randn(*shape, generator=gen).to(device, dtype)
                       for shape in ((rows, cin), (cout, cin), (cout,)))
            linear = onednn_linear if precision == "fp32" and ONEDNN_FP32 and device == "cpu" \
                else F.linear  # the kernel of the "ours fp32" row
            call = functools.partial(linear, x, w, b)
            call()  # warm-up
            t = statistics.median(wall for wall, _ in timed(call, repeats, device))
            flops += 2 * rows * cin * cout * calls
            seconds += t * calls
    return Ceiling(name, batch, precision, flops / 1e9, seconds, flops / seconds / 1e9)


def bench_preset(name: str, batch: int, args: argparse.Namespace,
                 worker: OfficialWorker | None) -> tuple[list[Row], list[Ceiling]]:
    """Rows for one preset and batch, ours and official alternating for ``args.rounds``
    rounds; and the Linear-layer ceilings."""
    cfg, dev = get_preset(name).generator, args.device
    torch.manual_seed(0)
    model = HiTGenerator(cfg).eval().to(dev)
    z = torch.randn(batch, cfg.latent_dim, generator=torch.Generator().manual_seed(1)).to(dev)
    shapes = linear_shapes(model, z)
    ceilings = [linear_ceiling(name, batch, shapes, precision, max(3, args.repeats), dev)
                for precision in args.precisions]
    ours = _ours(model, z, args.compile, args.freezing, args.precisions)
    notes = {k: note for k, (_, note) in ours.items()}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in ours}
    peaks: dict[str, int | None] = {}
    request = {"size": cfg.resolution, "batch": batch, "latent": cfg.latent_dim,
               "repeats": args.repeats}
    if worker is not None and cfg.resolution not in OFFICIAL_SIZES:
        worker = None
    with torch.inference_mode():
        ref = model(z).float()
        diffs = {k: (fn().float() - ref).abs().max().item()  # warm-up (compile), output check
                 for k, (fn, _) in ours.items() if k != "ours fp32"}
        if worker is not None:
            setup = worker.request(op="gen_setup", **request)
            seconds = setup["seconds"]
            notes["official tf"] = (f"{setup['mode']} (best of {args.repeats}: eager "
                                    f"{seconds['eager']:.3f}s, tf.function "
                                    f"{seconds['tf.function']:.3f}s)")
            times["official tf"] = []
        for r in range(args.rounds):
            for key, (fn, _) in ours.items():
                if r == 0:
                    reset_peak_memory(dev)
                times[key] += timed(fn, args.repeats, dev)
                if r == 0:
                    peaks[key] = peak_memory_bytes(dev)
            if worker is not None:
                reply = worker.request(op="gen_time", **request)
                times["official tf"] += [(w, u) for w, u in reply["times"]]
    flops, scale = generator_flops(cfg), ref.abs().max().item()
    rows = []
    for key, ts in times.items():
        sec, peak = statistics.median(w for w, _ in ts), peaks.get(key)
        rows.append(Row(name, batch, key, sec, len(ts), batch / sec, flops * batch / sec / 1e9,
                        statistics.median(u for _, u in ts),
                        None if peak is None else peak / 2**20, diffs.get(key),
                        scale if key in diffs else None, notes[key]))
    return rows, ceilings


RATIOS = (("ours fp32", "official tf"), ("ours bf16", "official tf"),
          ("ours compile fp32", "official tf"), ("ours compile bf16", "official tf"),
          ("ours bf16", "ours fp32"), ("ours compile fp32", "ours fp32"),
          ("ours compile bf16", "ours fp32"), ("ours torch-linear fp32", "official tf"),
          ("ours fp32", "ours torch-linear fp32"))


def ratios(rows: list[Row]) -> list[str]:
    """Images/s ratios per preset and batch: ours vs official, bf16 and compiled vs fp32."""
    groups: dict[str, dict[str, float]] = {}
    for r in rows:
        groups.setdefault(f"{r.preset} batch {r.batch}", {})[r.impl] = r.images_per_s
    return ratio_lines(groups, RATIOS)


def format_table(rows: list[Row], peaks: dict[str, float]) -> str:
    header = ["preset", "batch", "impl", "ms/forward", "images/s", "GFLOP/s",
              "% of matmul peak", "max abs diff vs fp32 (max abs fp32 out)", "peak MiB",
              "samples", "CPU/wall", "note"]
    table = []
    for r in rows:
        peak = peaks["bf16"] if "bf16" in r.impl else peaks["fp32"]
        diff = "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.2e} ({r.fp32_max_abs:.2e})"
        table.append([r.preset, r.batch, r.impl, f"{r.seconds * 1e3:.1f}",
                      f"{r.images_per_s:.2f}", f"{r.gflops:.1f}", f"{100 * r.gflops / peak:.0f}%",
                      diff, "-" if r.peak_mib is None else f"{r.peak_mib:.0f}", r.samples,
                      f"{r.cpu_per_wall:.2f}", r.note])
    return markdown_table(header, table)


def format_ceilings(ceilings: list[Ceiling], rows: list[Row], peaks: dict[str, float]
                    ) -> list[str]:
    """One line per preset and batch: the ceilings against the peak and the best achieved."""
    out = []
    for preset, batch in dict.fromkeys((c.preset, c.batch) for c in ceilings):
        parts = []
        for c in (c for c in ceilings if (c.preset, c.batch) == (preset, batch)):
            same = [r.gflops for r in rows if (r.preset, r.batch) == (preset, batch)
                    and r.impl.startswith("ours") and (c.dtype == "bf16") == ("bf16" in r.impl)]
            best = max(same, default=None)
            part = (f"{c.dtype} {c.gflops:.0f} GFLOP/s ({100 * c.gflops / peaks[c.dtype]:.0f}% "
                    f"of the {c.dtype} matmul peak)")
            if best is not None:
                part += f", best ours {c.dtype} row {100 * best / peaks[c.dtype]:.0f}%"
            parts.append(part)
        out.append(f"{preset} batch {batch}: " + "; ".join(parts))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.generator_throughput",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="hit-tiny-32,hit-small-64,hit-b-128",
                   help="comma-separated presets (hit-b-1024 runs at batch 1 only)")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--repeats", type=int, default=3, help="timed forwards per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating ours/official rounds")
    p.add_argument("--compile", action="store_true", help="add torch.compile rows")
    p.add_argument("--precisions", default="fp32,bf16",
                   help="our rows: fp32, bf16 or both (where bf16 is emulated, as on AVX2-only "
                        "CPUs, its rows take minutes each)")
    p.add_argument("--freezing", action="store_true",
                   help="with --compile: inductor's weight freezing, on around each compiled call")
    add_machine_options(p)
    add_options(p)
    p.add_argument("--json", help="also write the rows and machine info here")
    args = p.parse_args(argv)
    check_options(p, args)
    if args.freezing and not args.compile:
        p.error("--freezing needs --compile")
    check_machine_options(p, args, ("repeats", "rounds"))
    args.presets = parse_presets(p, args.presets)
    args.precisions = tuple(args.precisions.split(","))
    if not args.precisions or not set(args.precisions) <= set(DTYPES):
        p.error(f"--precisions {','.join(args.precisions)}: choose fp32, bf16 or fp32,bf16")
    try:
        args.batches = [int(b) for b in args.batches.split(",")]
    except ValueError as e:
        p.error(f"--batches: {e}")
    if any(b < 1 for b in args.batches):
        p.error(f"--batches {args.batches}: batch sizes must be >= 1")
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    """Run the benchmark, print the table and ratios; returns the rows."""
    args = parse_args(argv)
    info = start_run(args.device, not args.no_malloc_cache)
    peaks = matmul_peaks(args.matmul_size, args.device, args.precisions)
    rows: list[Row] = []
    ceilings: list[Ceiling] = []
    with tempfile.TemporaryDirectory(prefix="hitgan-bench-") as tmp:
        threads = torch.get_num_threads()
        worker = (OfficialWorker(args.tf_python, args.official, threads, tmp,
                                 bool(info["malloc_cache"])) if args.official else None)
        if worker is not None:
            info["tensorflow"] = worker.describe(threads)
        try:
            for name in args.presets:
                for batch in args.batches:
                    if name in BATCH1_ONLY and batch > 1 and args.device == "cpu":
                        print(f"skip {name} at batch {batch}: batch 1 only on CPU",
                              file=sys.stderr)
                        continue
                    preset_rows, preset_ceilings = bench_preset(name, batch, args, worker)
                    for r in preset_rows:  # as it goes: a run stopped early still says something
                        print(f"{r.preset} batch {r.batch}: {r.impl} {r.seconds * 1e3:.1f} "
                              f"ms/forward, {r.images_per_s:.2f} img/s", file=sys.stderr,
                              flush=True)
                    rows += preset_rows
                    ceilings += preset_ceilings
        finally:
            if worker is not None:
                worker.close()
    print(describe(info))
    print(f"dense matmul {args.matmul_size}^2: " + ", ".join(
        f"{k} {peaks[k]:.1f} GFLOP/s" for k in args.precisions) + "\n")
    print(format_table(rows, peaks))
    print("\nratios (images/s):")
    for line in ratios(rows):
        print("  " + line)
    print("\nLinear layers alone (each of the generator's Linear shapes timed in isolation; "
          "a generator made only of them could reach this):")
    for line in format_ceilings(ceilings, rows, peaks):
        print("  " + line)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": info, "matmul_gflops": peaks, "argv": sys.argv[1:] if argv is None
             else argv, "rows": [asdict(r) for r in rows],
             "linear_ceilings": [asdict(c) for c in ceilings]}, indent=2))
    return rows


if __name__ == "__main__":
    main()
