"""The benchmark suite: ``python -m bench`` runs every benchmark and writes one JSON.

Parts (each is also a module of its own, with more options):

- ``inference``: generator forward img/s, fp32 / bf16 autocast / torch.compile (freezing),
  achieved GFLOP/s and peak memory (bench/generator_throughput.py);
- ``train``: one full training step (G and D, R1 every step; with and without bCR), img/s,
  GFLOP/s, peak memory (bench/train_step.py);
- ``complexity``: time and FLOPs per output pixel from 32 to 1024 px against a global-attention
  baseline, with a plot (bench/complexity.py);
- ``precision``: bf16 training losses against fp32 over a few hundred steps
  (bench/precision.py).

Every part measures the dense-matmul GFLOP/s (fp32 and bf16) of the machine in its own run.
``--official`` and ``--tf-python`` add the official TF implementation, run side by side.
``--smoke`` runs every part on the tiny preset for one iteration (what CI does).
Run it on an otherwise idle machine. Results and set-up of the official side:
docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench import complexity, generator_throughput, precision, train_step
from bench.common import describe, machine_info
from bench.official import add_options, check_options

PARTS = ("inference", "train", "complexity", "precision")


def part_argv(part: str, args: argparse.Namespace, json_path: Path) -> list[str]:
    """The argument list of one part, from the suite's options."""
    official = ["--official", args.official, "--tf-python", args.tf_python] if args.official \
        else []
    common = ["--json", str(json_path)] + (["--no-malloc-cache"] if args.no_malloc_cache else [])
    smoke = args.smoke
    if part == "inference":
        return common + official + [
            "--presets", "hit-tiny-32" if smoke else args.presets,
            "--batches", "1" if smoke else args.batches,
            "--device", args.device] + (
            ["--repeats", "1", "--rounds", "1", "--matmul-size", "256"] if smoke
            else ["--compile", "--freezing"])
    if part == "train":
        return common + official + [
            "--presets", "hit-tiny-32" if smoke else args.presets,
            "--batch", "2" if smoke else str(args.train_batch), "--device", args.device] + (
            ["--repeats", "1", "--rounds", "1", "--warmup", "1", "--matmul-size", "256",
             "--modes", "fp32,bf16"] if smoke else [])
    if part == "complexity":
        plot = [] if args.plot_dir is None else [
            "--plot", str(Path(args.plot_dir) / "complexity.png")]
        return common + plot + (["--resolutions", "32,64", "--repeats", "1",
                                 "--matmul-size", "256"] if smoke else [])
    if part == "precision":
        plot = [] if args.plot_dir is None else [
            "--plot", str(Path(args.plot_dir) / "precision.png")]
        return common + plot + (["--steps", "2", "--batch", "4", "--check-every", "1"]
                                if smoke else [])
    raise ValueError(part)


MAINS = {"inference": generator_throughput.main, "train": train_step.main,
         "complexity": complexity.main, "precision": precision.main}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {PARTS}")
    p.add_argument("--presets", default="hit-tiny-32,hit-small-64,hit-b-128",
                   help="inference and training presets")
    p.add_argument("--batches", default="1,8", help="inference batch sizes")
    p.add_argument("--train-batch", type=int, default=8, help="training step batch size")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--smoke", action="store_true",
                   help="tiny preset, one iteration of everything (CI)")
    p.add_argument("--no-malloc-cache", action="store_true",
                   help="keep glibc's default allocator settings (see hitgan/runtime.py)")
    p.add_argument("--plot-dir", help="write complexity.png and precision.png here")
    add_options(p)
    p.add_argument("--json", default="bench-results.json", help="the combined results")
    args = p.parse_args(argv)
    check_options(p, args)
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    if unknown := [s for s in args.parts if s not in PARTS]:
        p.error(f"--parts: unknown {unknown}; choose from {PARTS}")
    if args.train_batch < 1:
        p.error("--train-batch must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    out = Path(args.json)
    results: dict[str, object] = {"argv": sys.argv[1:] if argv is None else argv,
                                  "machine": machine_info(args.device), "parts": {}}
    print(describe(results["machine"]) + "\n")  # type: ignore[arg-type]
    for part in args.parts:
        print(f"==== {part} " + "=" * (90 - len(part)), flush=True)
        part_json = out.with_name(f"{out.stem}.{part}.json")
        t = time.perf_counter()
        MAINS[part](part_argv(part, args, part_json))
        results["parts"][part] = json.loads(part_json.read_text())  # type: ignore[index]
        part_json.unlink()
        print(f"({part}: {time.perf_counter() - t:.0f} s)\n", flush=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
