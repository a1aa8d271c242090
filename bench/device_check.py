"""One prepared GPU check (``bench/device_check.sh``): the steps below, each a subprocess with a
time limit, then one JSON and one markdown table of what they measured.

1. ``tests``: the tests marked ``cuda`` (``pytest -m cuda``; skipped where there is no GPU):
   the generator, training, sampling and evaluation on the GPU against the CPU;
2. ``inference``: generator img/s at 128, 256 and 1024 px, fp32 and bf16, eager
   (``bench.generator_throughput``), with peak memory;
3. ``compile``: the same at 128 px compiled (``--compile --freezing``; compiling every size
   takes minutes);
4. ``train``: one training step of hit-b-128 at batch 32 in bf16 (``bench.train_step``);
5. ``fid``: FID feature extraction, the reference, fast and compiled extractors side by side
   on the 5,000 MNIST digits (``bench.fid_speed``).

``--dry-run`` runs every step on the CPU at tiny sizes (hit-tiny-32, a few images), to check
the script itself; CI runs it. A step that fails or runs out of time is recorded as such, with
the last lines it printed, and the others still run. The limits add up to 10 minutes;
``--steps`` runs some of the steps (the others are left out of the JSON and the table).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import markdown_table, start_run

STEPS = ("tests", "inference", "compile", "train", "fid")
DRY_LIMIT = 600  # seconds per step of --dry-run: it checks the script, not the machine


def steps(dry_run: bool, out: Path) -> dict[str, tuple[list[str], int]]:
    """name -> (argv after ``python``, time limit in seconds)."""
    if dry_run:
        tiny = ["--matmul-size", "256"]
        return {
            "tests": (["-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"], DRY_LIMIT),
            "inference": (["-m", "bench.generator_throughput", "--presets", "hit-tiny-32",
                           "--batches", "1", "--repeats", "1", "--rounds", "1", *tiny,
                           "--json", str(out / "inference.json")], DRY_LIMIT),
            "compile": (["-m", "bench.generator_throughput", "--presets", "hit-tiny-32",
                         "--batches", "1", "--repeats", "1", "--rounds", "1", "--compile",
                         "--precisions", "fp32", *tiny, "--json", str(out / "compile.json")],
                        DRY_LIMIT),
            "train": (["-m", "bench.train_step", "--presets", "hit-tiny-32", "--batch", "2",
                       "--modes", "bf16", "--bcr", "off", "--repeats", "1", "--rounds", "1",
                       "--warmup", "1", *tiny, "--json", str(out / "train.json")], DRY_LIMIT),
            "fid": (["-m", "bench.fid_speed", "--images", "4", "--batch", "4", "--rounds", "1",
                     "--extractors", "fast", "--no-fid", *tiny, "--json", str(out / "fid.json")],
                    DRY_LIMIT)}
    cuda = ["--device", "cuda"]
    generator = ["-m", "bench.generator_throughput", *cuda, "--repeats", "5", "--rounds", "2"]
    return {
        "tests": (["-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"], 120),
        "inference": ([*generator, "--presets", "hit-b-128,hit-b-256,hit-b-1024",
                       "--batches", "1,32", "--json", str(out / "inference.json")], 150),
        "compile": ([*generator, "--presets", "hit-b-128", "--batches", "32", "--compile",
                     "--freezing", "--json", str(out / "compile.json")], 150),
        "train": (["-m", "bench.train_step", *cuda, "--presets", "hit-b-128", "--batch", "32",
                   "--modes", "bf16", "--bcr", "off", "--repeats", "5", "--rounds", "1",
                   "--warmup", "2", "--json", str(out / "train.json")], 90),
        "fid": (["-m", "bench.fid_speed", *cuda, "--images", "5000", "--batch", "250",
                 "--rounds", "2", "--json", str(out / "fid.json")], 90)}


def run_step(argv: list[str], limit: int) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                              timeout=limit)
        status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
    except subprocess.TimeoutExpired as stopped:  # its output so far comes as bytes
        status = f"timed out after {limit} s"
        tail = b"".join(x for x in (stopped.stdout, stopped.stderr) if isinstance(x, bytes)
                        ).decode(errors="replace").strip().splitlines()[-3:]
    return {"argv": argv, "status": status, "seconds": round(time.perf_counter() - start, 1),
            "tail": tail}


def mib(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def table(results: dict[str, Any]) -> str:
    """The measured numbers of every step as one markdown table."""
    rows: list[list[object]] = []
    for name, step in results["steps"].items():
        data = step.get("data")
        if name == "tests" or data is None:
            rows.append([name, step["status"], "", "", "", " / ".join(step["tail"][-1:])])
        elif name in ("inference", "compile"):
            rows += [[name, f"{r['preset']} batch {r['batch']}", r["impl"],
                      f"{r['images_per_s']:.1f}", mib(r["peak_mib"]), r["note"]]
                     for r in data["rows"]]
        elif name == "train":
            rows += [[name, f"{r['preset']} batch {r['batch']}", r["impl"],
                      f"{r['images_per_s']:.1f}", mib(r["peak_mib"]), r["variant"]]
                     for r in data["rows"]]
        else:
            ref = data["rows"][0]["images_per_s"]
            rows += [[name, f"{data['args']['images']} images", r["extractor"],
                      f"{r['images_per_s']:.1f}", "",
                      f"{r['images_per_s'] / ref:.2f}x the reference; features to "
                      f"{r['relative_difference']:.1e} of their scale; first call "
                      f"{r['first_call_s']:.1f} s"] for r in data["rows"]]
    return markdown_table(["step", "case", "variant", "img/s", "peak MiB", "notes"], rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="bench/device_check.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check the script")
    p.add_argument("--out", default="device-check", help="folder for the JSON and the table")
    p.add_argument("--steps", default=",".join(STEPS),
                   help=f"comma-separated steps to run, of {','.join(STEPS)} (default: all); "
                   "e.g. again the one that failed or ran out of time")
    args = p.parse_args(argv)
    chosen = args.steps.split(",")
    if unknown := sorted(set(chosen) - set(STEPS)):
        p.error(f"--steps {args.steps}: unknown {','.join(unknown)}; use some of "
                f"{','.join(STEPS)}")
    if not args.dry_run and not torch.cuda.is_available():
        p.error("no CUDA device here: run it on a lent GPU machine, or pass --dry-run")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"dry_run": args.dry_run,
                               "machine": start_run("cpu" if args.dry_run else "cuda"),
                               "steps": {}}
    start = time.perf_counter()
    for name, (step_argv, limit) in steps(args.dry_run, out).items():
        if name not in chosen:
            continue
        print(f"== {name} (at most {limit} s)", flush=True)
        step = run_step(step_argv, limit)
        json_path = out / f"{name}.json"
        if json_path.exists():
            step["data"] = json.loads(json_path.read_text())
            json_path.unlink()
        results["steps"][name] = step
        print(f"   {step['status']} in {step['seconds']} s", flush=True)
    results["seconds"] = round(time.perf_counter() - start, 1)
    (out / "device_check.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    (out / "device_check.md").write_text(text + "\n")
    print(text + f"\n\nwrote {out / 'device_check.json'} and {out / 'device_check.md'} "
          f"({results['seconds']} s)")
    return results


if __name__ == "__main__":
    main()
