"""One full training step on this machine: hitgan's Trainer (fp32, bf16 autocast, torch.compile)
against the machine's dense-matmul peak and, when given, the official TF training step.

One step is ``Trainer.train_step`` on a fixed batch of reals: G forward, D on fakes and on
reals with R1 (cost 10, every step, as the official recipe), optionally bCR on DiffAugmented
copies, the G and D backward passes (R1's double backward included), both Adam updates and the
EMA of G. For example, with the official step beside ours::

    python -m bench.train_step --presets hit-b-128 --batch 8 \
        --official OFFICIAL_CHECKOUT --tf-python TF_VENV/bin/python

The official step (bench/tf_worker.py: the official models, utils/losses.py, DiffAugment and
tf.keras Adam in the structure of GANTrainer._train_one_step, in a tf.function) runs in a worker
process of the TF interpreter. Ours and the official step are timed in alternating rounds and
the medians over all rounds reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

from bench.common import (
    add_machine_options,
    check_machine_options,
    describe,
    markdown_table,
    matmul_peaks,
    parse_presets,
    peak_memory_bytes,
    ratio_lines,
    release_memory,
    reset_peak_memory,
    resident_bytes,
    start_run,
    timed,
)
from bench.official import OFFICIAL_SIZES, OfficialWorker, add_options, check_options
from hitgan.distributed import DistInfo
from hitgan.models.config import get_preset
from hitgan.training.config import build_config
from hitgan.training.loop import Trainer

# mode -> (Trainer precision, Trainer compile); every mode but "auto" is the official recipe
# (R1 cost 10 every step, the preset's D)
MODES: dict[str, tuple[str | None, bool]] = {
    "fp32": ("fp32", False), "bf16": ("bf16", False), "compile": ("fp32", True),
    "compile-bf16": ("bf16", True), "auto": (None, False)}  # auto: its precision included
AUTO = "ours auto recipe"
VARIANTS = {"off": ("R1",), "on": ("R1+bCR",), "both": ("R1", "R1+bCR")}
OFFICIAL = "official tf"


@dataclass
class Row:
    preset: str
    batch: int
    impl: str  # "ours fp32", "ours bf16", "ours compile fp32", ..., "official tf"
    variant: str  # "R1" or "R1+bCR"
    seconds: float  # median seconds per training step
    samples: int  # timed steps behind the median
    images_per_s: float
    step_gflop: float  # FLOPs of one step in GFLOP, counted on ours (the official's too)
    gflops: float  # achieved GFLOP/s: step_gflop / seconds
    peak_fraction: float  # gflops / the same-run dense-matmul peak (bf16 peak for bf16 rows)
    peak_mib: float | None  # peak memory over the timed steps (CPU: the process's VmHWM)
    resident_mib: float | None  # memory held just before the timed steps (CPU: VmRSS)
    cpu_per_wall: float  # median process CPU time / wall time: ~threads when nothing competes
    loss_diff: float | None = None  # first step's losses: max abs diff vs ours fp32, same seed
    first_losses: dict[str, float] = field(default_factory=dict)
    note: str = ""


class StepFlops(TorchDispatchMode):
    """FLOPs of the matrix products (matmul, convolution, attention) of everything run inside,
    with torch.utils.flop_counter's formulas, forward and every backward (R1's double backward
    too). FlopCounterMode itself cannot count a training step: its module tracker's backward
    hooks break torch.autograd.grad on leaf inputs (R1), and it has no formula for the CPU
    flash-attention kernels, added here."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet is torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
            self.total += sdpa_flop_count(args[0].shape, args[1].shape, args[2].shape)
        elif packet is torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
            self.total += sdpa_backward_flop_count(args[0].shape, args[1].shape,
                                                   args[2].shape, args[3].shape)
        elif packet in flop_registry:
            self.total += flop_registry[packet](*args, **kwargs, out_val=out)
        return out


def make_trainer(preset: str, batch: int, mode: str, bcr: bool, device: str,
                 out: str) -> Trainer:
    """The real Trainer in the official recipe: R1 cost 10 every step, Adam(0, 0.99), EMA
    averaging from the first step (the official steady state; it starts at step 10). Mode
    "auto": the auto recipe for the built-in digits on this machine (lazy R1 among others)."""
    precision, compile_ = MODES[mode]
    options = {"preset": preset, "batch": batch, "compile": compile_, "bcr": bcr,
               "ema_start": 0, "data": "mnist", "out": out, "workers": 0,
               "channels": 3}  # RGB, as the official models: the digits only hold the loader
    if precision is None:
        cfg = build_config(options, recipe="auto")
    else:
        cfg = build_config({**options, "precision": precision, "penalty": "r1",
                            "penalty_every": 1}, recipe="official")
    return Trainer(cfg, DistInfo(device=torch.device(device)), progress=False)


def _losses(stats: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in stats.items() if "loss" in k or k in ("D/r1", "D/bcr")}


@dataclass
class _Case:
    """One row under measurement: ours (a trainer) or the official step (a worker request)."""
    impl: str
    variant: str
    note: str
    trainer: Trainer | None = None
    request: dict[str, Any] | None = None
    loss_diff: float | None = None
    first_losses: dict[str, float] = field(default_factory=dict)
    flops: int = 0  # per step; the official case uses ours fp32's count
    times: list[tuple[float, float]] = field(default_factory=list)
    peak: int | None = None
    resident: int | None = None

    def measure(self, reals: torch.Tensor, repeats: int, device: str,
                worker: OfficialWorker | None) -> None:
        """One round: ``repeats`` timed steps, and the memory they held."""
        if self.trainer is not None:
            trainer, cycle = self.trainer, self.trainer.cfg.penalty_every

            def steps() -> None:  # a whole lazy-R1 cycle: its regularised step included
                for _ in range(cycle):
                    trainer.train_step([reals])

            reset_peak_memory(device)
            resident = resident_bytes(device)
            self.times += [(w / cycle, u) for w, u in timed(steps, repeats, device)]
            peak = peak_memory_bytes(device)
        else:
            assert worker is not None and self.request is not None
            reply = worker.request(op="train_time", repeats=repeats, **self.request)
            self.times += [(w, u) for w, u in reply["times"]]
            peak, resident = reply["peak_bytes"], reply["rss_bytes"]
        if peak is not None:
            self.peak = max(self.peak or 0, peak)
        if resident is not None:
            self.resident = max(self.resident or 0, resident)


def official_settings(trainer: Trainer) -> dict[str, Any]:
    """The official step's settings: the same latent size, discriminator, learning rates,
    augmentation policy and EMA decay as our trainer's."""
    cfg, d = trainer.cfg, get_preset(trainer.cfg.preset).discriminator
    return {"latent": trainer.G.config.latent_dim, "lr_g": cfg.lr_g, "lr_d": cfg.lr_d,
            "channel_multiplier": d.channel_multiplier, "blur_resample": d.blur_resample,
            "augment": cfg.augment, "ema_decay": cfg.ema_decay}


def _setup_variant(name: str, variant: str, args: argparse.Namespace, reals: torch.Tensor,
                   worker: OfficialWorker | None, workdir: str) -> tuple[list[_Case], int]:
    """The cases of one variant, warmed up, and the FLOPs of one step."""
    batch, dev, bcr = args.batch, args.device, variant == "R1+bCR"
    cases = []
    reference = make_trainer(name, batch, "fp32", bcr, dev, workdir)
    with StepFlops() as counter:  # the first step: FLOPs and the reference losses
        ref_losses = _losses(reference.train_step([reals]))
    for mode in args.modes:
        precision, compile_ = MODES[mode]
        flops = counter.total
        if mode == "fp32":
            trainer, first = reference, ref_losses
        else:  # the same seed: the same weights, latents and augmentations
            trainer = make_trainer(name, batch, mode, bcr, dev, workdir)
            first = _losses(trainer.train_step([reals]))  # compiles in compile modes
        for _ in range(args.warmup - 1):
            trainer.train_step([reals])
        if precision is None:  # auto: its own FLOPs, averaged over a lazy-R1 cycle
            cycle = trainer.cfg.penalty_every
            with StepFlops() as own:
                for _ in range(cycle):
                    trainer.train_step([reals])
            flops = own.total // cycle
            t = trainer.cfg
            impl, diff = AUTO, None
            note = (f"{t.precision}, R1 cost {t.penalty_cost:g} every {cycle} steps (timed over "
                    f"whole cycles), D width {t.d_width:g}, DiffAugment {t.diffaug}")
        else:
            note = ("torch.compile G, " if compile_ else "eager, ") + (
                "autocast bf16, fp32 weights" if precision == "bf16" else "fp32")
            diff = None
            if mode != "fp32":
                diff = max(abs(first[k] - ref_losses[k]) for k in ref_losses)
                note += f"; first-step losses vs fp32: max abs diff {diff:.1e}"
            impl = "ours " + ("compile " if compile_ else "") + precision
        cases.append(_Case(impl, variant, note, trainer=trainer, loss_diff=diff,
                           first_losses=first, flops=flops))
        _progress(f"{name} batch {batch} {variant}: {impl} ready")
    if worker is not None:
        request = {"size": reals.shape[-1], "batch": batch, "bcr": bcr}
        setup = worker.request(op="train_setup", warmup=args.warmup, **request,
                               **official_settings(reference))
        cases.append(_Case(OFFICIAL, variant, f"tf.function; build, trace and {args.warmup} "
                           f"warm-up steps {setup['setup_s']:.0f}s", request=request,
                           first_losses=setup["losses"]))
        _progress(f"{name} batch {batch} {variant}: {OFFICIAL} ready")
    return cases, counter.total


def _progress(message: str) -> None:
    print(f"[train_step {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bench_preset(name: str, args: argparse.Namespace, peaks: dict[str, float],
                 worker: OfficialWorker | None, workdir: str) -> list[Row]:
    """Rows for one preset: each variant in each mode, and the official step. Variant by
    variant (one variant's models in memory at a time); within one, ours and the official
    alternate for ``args.rounds`` rounds."""
    batch, dev = args.batch, args.device
    res = get_preset(name).generator.resolution
    reals = torch.rand(batch, 3, res, res, generator=torch.Generator().manual_seed(1))
    reals = (reals * 2 - 1).to(dev)  # (B, 3, R, R) in [-1, 1]
    rows = []
    for variant in VARIANTS[args.bcr]:
        cases, flops = _setup_variant(name, variant, args, reals, worker, workdir)  # official
        for r in range(args.rounds):
            for case in cases:
                case.measure(reals, args.repeats, dev, worker)
            _progress(f"{name} batch {batch} {variant}: round {r + 1}/{args.rounds} done")
        for c in cases:
            gflop = (c.flops or flops) / 1e9
            sec = statistics.median(w for w, _ in c.times)
            bf16 = "bf16" in c.impl or (c.trainer is not None
                                          and c.trainer.cfg.precision == "bf16")
            peak = peaks["bf16" if bf16 else "fp32"]
            rows.append(Row(name, batch, c.impl, c.variant, sec, len(c.times), batch / sec,
                            gflop, gflop / sec, gflop / sec / peak,
                            None if c.peak is None else c.peak / 2**20,
                            None if c.resident is None else c.resident / 2**20,
                            statistics.median(u for _, u in c.times), c.loss_diff,
                            c.first_losses, c.note))
            if c.request is not None and worker is not None:
                worker.request(op="train_free", **c.request)
        del cases
        release_memory()
    return rows


RATIOS = (("ours fp32", OFFICIAL), ("ours bf16", OFFICIAL), ("ours compile fp32", OFFICIAL),
          ("ours compile bf16", OFFICIAL), ("ours bf16", "ours fp32"),
          ("ours compile fp32", "ours fp32"), ("ours compile bf16", "ours fp32"),
          (AUTO, "ours fp32"), (AUTO, "ours bf16"))


def ratios(rows: list[Row]) -> list[str]:
    """Images/s ratios per preset, batch and variant."""
    groups: dict[str, dict[str, float]] = {}
    for r in rows:
        groups.setdefault(f"{r.preset} batch {r.batch} {r.variant}", {})[r.impl] = r.images_per_s
    return ratio_lines(groups, RATIOS)


def format_table(rows: list[Row]) -> str:
    header = ["preset", "batch", "impl", "variant", "ms/step", "img/s", "GFLOP/s",
              "% of peak", "peak MiB", "samples", "CPU/wall", "note"]
    table = [[r.preset, r.batch, r.impl, r.variant, f"{r.seconds * 1e3:.0f}",
              f"{r.images_per_s:.2f}", f"{r.gflops:.1f}", f"{100 * r.peak_fraction:.0f}%",
              "-" if r.peak_mib is None else f"{r.peak_mib:.0f}", r.samples,
              f"{r.cpu_per_wall:.2f}", r.note] for r in rows]
    return markdown_table(header, table)


def notes(args: argparse.Namespace, rows: list[Row]) -> list[str]:
    out = [f"GFLOP per step: {', '.join(sorted({f'{r.variant} {r.step_gflop:.1f}' for r in rows}))}"
           " (matmul, convolution and attention FLOPs of one ours fp32 step, counted with "
           "torch.utils.flop_counter formulas: forward, backward and R1's double backward; the "
           "auto row counts its own, averaged over a lazy-R1 cycle); "
           "% of peak is against the same-run dense matmul (bf16 peak for bf16 rows)"]
    if args.device == "cpu":
        out.append("peak MiB: the process's peak resident set (VmHWM) over the timed steps; it "
                   "includes everything the process holds (every trainer of this run, the "
                   "allocator's cache), not only the step")
    if any(r.impl == OFFICIAL for r in rows):
        out.append("official tf: the official models, losses, DiffAugment and tf.keras Adam in "
                   "GANTrainer._train_one_step's structure, EMA every step; its GFLOP/s uses "
                   "our FLOP count for the same configuration (the same matrix products); its "
                   "peak MiB is the worker process's VmHWM")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.train_step",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="hit-tiny-32",
                   help="comma-separated presets; the official step exists for hit-b-128, "
                        "hit-b-256 and hit-b-1024")
    p.add_argument("--batch", type=int, default=8, help="images per step")
    p.add_argument("--modes", default="fp32,bf16",
                   help=f"comma list of {', '.join(MODES)} (compile: the Trainer's torch.compile"
                        " of G; bf16: autocast with fp32 master weights; auto: the auto "
                        "recipe)")
    p.add_argument("--bcr", choices=tuple(VARIANTS), default="both",
                   help="time the step without bCR (off), with it (on) or both (default)")
    p.add_argument("--repeats", type=int, default=2, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating ours/official rounds")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps per trainer first (the first counts FLOPs, compiles)")
    add_machine_options(p)
    add_options(p)
    p.add_argument("--json", help="also write the rows, notes and machine info here")
    args = p.parse_args(argv)
    check_options(p, args)
    check_machine_options(p, args, ("batch", "repeats", "rounds", "warmup"))
    args.modes = [m.strip() for m in args.modes.split(",")]
    bad = [m for m in args.modes if m not in MODES]
    if bad or len(set(args.modes)) != len(args.modes):
        p.error(f"--modes {','.join(args.modes)}: use distinct names from {', '.join(MODES)}")
    args.presets = parse_presets(p, args.presets)
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    """Run the benchmark, print the table, notes and ratios; returns the rows."""
    args = parse_args(argv)
    info = start_run(args.device, not args.no_malloc_cache)
    peaks = matmul_peaks(args.matmul_size, args.device)
    official = [n for n in args.presets
                if get_preset(n).generator.resolution in OFFICIAL_SIZES]
    if args.official and args.device != "cpu":
        print(f"official TF step: skipped on --device {args.device} (the worker runs TF on the "
              "CPU)", file=sys.stderr)
        official = []
    elif args.official and not official:
        print(f"official TF step: none of {args.presets} has an official size "
              f"{OFFICIAL_SIZES}", file=sys.stderr)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="hitgan-bench-") as tmp:
        threads = torch.get_num_threads()
        worker = (OfficialWorker(args.tf_python, args.official, threads, tmp,
                                 bool(info["malloc_cache"])) if args.official and official
                  else None)
        if worker is not None:
            info["tensorflow"] = worker.describe(threads)
        try:
            for name in args.presets:
                rows += bench_preset(name, args, peaks, worker if name in official else None,
                                     tmp)
        finally:
            if worker is not None:
                worker.close()
    print(describe(info))
    print(f"dense matmul {args.matmul_size}^2: fp32 {peaks['fp32']:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s\n")
    print(format_table(rows))
    lines = notes(args, rows)
    print()
    for line in lines:
        print("- " + line)
    ratio_text = ratios(rows)
    print("\nratios (img/s):")
    for line in ratio_text:
        print("  " + line)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": info, "matmul_gflops": peaks,
             "argv": sys.argv[1:] if argv is None else argv, "notes": lines,
             "ratios": ratio_text, "rows": [asdict(r) for r in rows]}, indent=2))
    return rows


if __name__ == "__main__":
    main()
