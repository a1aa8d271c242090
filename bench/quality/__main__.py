"""The quality suite: hitgan against the DCGAN baseline on several datasets, side by side.

    python -m bench.quality                          # 20 CPU-minutes per run, 40 at 64 px
    python -m bench.quality --sets digits,photos-colour-32 --minutes 5 --seeds 0,1
    python -m bench.quality --merge seed0/suite.json seed1/suite.json --out docs/quality

For each set (bench/quality/data.py, built into ``--data-dir`` when missing; ``digits`` is the
built-in ``mnist``) and seed, hitgan (32 px: hit-tiny-32, 64 px: hit-small-64) and the baseline
train at the same time, as two processes of ``python -m bench.quality.compare`` (one
``--no-baseline``, one ``--baseline-only``), each on one thread (``OMP_NUM_THREADS=1 --threads
1``) and budgeted by its own CPU time (``--clock cpu``), so neither shortens the other's budget:
``--minutes`` at 32 px, ``--minutes-64`` at 64 px. Both are scored against the same reference:
the Inception statistics of a fixed random ``--reference-images`` real images, cached in
``--data-dir``. Per set it prints both FIDs, the ratio hitgan / baseline (below 1: hitgan is
better), precision and recall of both (fidelity and coverage: k = 3 on Inception features) and
each run's training steps; with several seeds the mean, then each seed's value in brackets (the
ratio is that of the mean FIDs). Then the geometric mean of the 32 px sets' ratios; a 64 px set
has its row, outside that mean. Writes to ``--out``: suite.json, suite.md (the table),
suite.png (FID per set) and each run's last 64 samples, suite-SET-seedS-{hitgan,baseline}.png.
``--merge`` trains nothing: it joins suites run apart (other seeds or sets, on other days or
machines, with the same options) into one, each set's seeds together, and says which code and
machine ran which seeds. A set's runs belong together when their sets hold the same pixels
(``data.fingerprint``, recorded in suite.json) and the same count of real images was scored.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from bench.common import ROOT, describe, markdown_table, start_run
from bench.quality import data
from bench.quality.compare import stem
from hitgan.data.dataset import Preprocess
from hitgan.metrics.features import InceptionExtractor
from hitgan.metrics.stats import cached_dataset_stats

PRESETS = {32: "hit-tiny-32", 64: "hit-small-64"}  # by resolution
RUNS = {"hitgan": "--no-baseline", "baseline": "--baseline-only"}  # compare.py's option for each
DEFAULT_SETS = "digits,digits-60k,photos-colour-32,photos-colour-64"


def reference(source: str, resolution: int, args: argparse.Namespace,
              extractor: InceptionExtractor) -> tuple[Path, int]:
    """Inception statistics of ``--reference-images`` of a set (a fixed random subset), cached
    in ``--data-dir``: their file and image count."""
    stats, path, hit = cached_dataset_stats(source, Preprocess(resolution), extractor,
                                            args.data_dir, max_images=args.reference_images,
                                            progress=False)
    print(f"reference {path.name}: {stats.meta['images']} images "
          f"({'cached' if hit else 'computed'})", file=sys.stderr, flush=True)
    return path, stats.meta["images"]


def _stream(proc: subprocess.Popen[str], label: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        print(f"[{label}] {line.rstrip()}", file=sys.stderr, flush=True)


def train_pair(name: str, source: str, preset: str, minutes: float, seed: int, ref: Path,
               args: argparse.Namespace, work: Path) -> dict[str, dict[str, Any]]:
    """hitgan and the baseline on one set, two processes at once; each run's result (from
    compare.py's JSON), its sample grid copied to ``--out``."""
    procs = {}
    for kind, only in RUNS.items():
        out = work / f"{name}-seed{seed}-{kind}"
        argv = [sys.executable, "-m", "bench.quality.compare", only, "--data", source,
                "--preset", preset, "--minutes", str(minutes), "--seed", str(seed),
                "--points", str(args.points), "--fid-samples", str(args.fid_samples),
                "--curve-samples", str(args.curve_samples), "--reference", str(ref),
                "--clock", "cpu", "--threads", "1", "--out", str(out)]
        procs[kind] = (subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True), out)
    streams = [threading.Thread(target=_stream, args=(proc, f"{name} seed {seed} {kind}"))
               for kind, (proc, _) in procs.items()]
    for thread in streams:
        thread.start()
    for thread in streams:
        thread.join()
    results = {}
    for kind, (proc, out) in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"{name} seed {seed} {kind}: exited with {proc.returncode} (its "
                             "output is above)")
        base = out / stem(source, preset, minutes)
        run = json.loads(Path(f"{base}.json").read_text())["runs"][0]
        grid = f"suite-{name}-seed{seed}-{kind}.png"
        shutil.copyfile(f"{base}-{kind}.png", args.out / grid)
        last = run["points"][-1]
        results[kind] = {"fid": last["fid"], "precision": last["precision"],
                         "recall": last["recall"], "samples": last["samples"],
                         "steps": run["steps"], "images": run["images"],
                         "minutes": round(run["seconds"] / 60, 2), "grid": grid,
                         "curve": [[p["minutes"], p["fid"]] for p in run["points"]]}
    return results


def summarise(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds of each run's numbers, and the ratio of the mean FIDs."""
    runs = {kind: {key: statistics.fmean(s[kind][key] for s in seeds)
                   for key in ("fid", "precision", "recall", "steps")} for kind in RUNS}
    return {**runs, "ratio": runs["hitgan"]["fid"] / runs["baseline"]["fid"]}


def geomean_32px(rows: list[dict[str, Any]]) -> float | None:
    """The geometric mean of the 32 px sets' ratios (None without one)."""
    ratios = [r["ratio"] for r in rows if r["px"] == 32]
    return statistics.geometric_mean(ratios) if ratios else None


def cell(row: dict[str, Any], value: Any, fmt: str) -> str:
    """``value(summary)`` formatted; with several seeds, each seed's value in brackets."""
    text = format(value(row), fmt)
    if len(row["seeds"]) > 1:
        text += " (" + ", ".join(format(value(s), fmt) for s in row["seeds"]) + ")"
    return text


def table(rows: list[dict[str, Any]]) -> str:
    header = ["set", "kind", "images", "px", "preset", "min", "reals", "hitgan FID",
              "baseline FID", "ratio", "hitgan P / R", "baseline P / R", "hitgan steps",
              "baseline steps"]

    def pr(kind: str) -> Any:
        return lambda r: f"{r[kind]['precision']:.3f} / {r[kind]['recall']:.3f}"

    lines = [[r["set"], r["kind"], f"{r['images']:,}", r["px"], r["preset"], f"{r['minutes']:g}",
              f"{r['reference']['images']:,}",
              cell(r, lambda s: s["hitgan"]["fid"], ".2f"),
              cell(r, lambda s: s["baseline"]["fid"], ".2f"),
              cell(r, lambda s: s["ratio"], ".3f"),
              cell(r, pr("hitgan"), ""), cell(r, pr("baseline"), ""),
              cell(r, lambda s: s["hitgan"]["steps"], ".0f"),
              cell(r, lambda s: s["baseline"]["steps"], ".0f")] for r in rows]
    return markdown_table(header, lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars: each set's mean FID of hitgan and of the baseline, seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(rows) + 2), 4))
    for offset, kind in ((-0.2, "hitgan"), (0.2, "baseline")):
        xs = [k + offset for k in range(len(rows))]
        ax.bar(xs, [r[kind]["fid"] for r in rows], 0.4, label=kind)
        for x, r in zip(xs, rows, strict=True):
            ax.plot([x] * len(r["seeds"]), [s[kind]["fid"] for s in r["seeds"]], "k.")
    ax.set_xticks(range(len(rows)), [f"{r['set']}\n{r['px']} px, {r['minutes']:g} min"
                                     for r in rows])
    ax.set(ylabel="FID (lower is better)", title="hitgan and the DCGAN baseline, same CPU time")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.quality",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default=DEFAULT_SETS,
                   help=f"comma-separated, of {', '.join(data.SUITE)} (default {DEFAULT_SETS})")
    p.add_argument("--minutes", type=float, default=20, help="CPU minutes of each 32 px run")
    p.add_argument("--minutes-64", type=float, default=40, help="CPU minutes of each 64 px run")
    p.add_argument("--seeds", default="0", help="comma-separated training/evaluation seeds")
    p.add_argument("--data-dir", type=Path, default=Path("data/suite"),
                   help="the built sets and their reference statistics")
    p.add_argument("--fid-samples", type=int, default=5000,
                   help="samples of each run's FID, precision and recall")
    p.add_argument("--reference-images", type=int, default=10_000,
                   help="real images of each set's reference statistics (a fixed subset)")
    p.add_argument("--points", type=int, default=1,
                   help="FID snapshots per run (the last one is the result)")
    p.add_argument("--curve-samples", type=int, default=1000,
                   help="samples of the FID at the earlier snapshots")
    p.add_argument("--out", type=Path, default=Path("docs/quality"),
                   help="JSON, table, plot and sample grids go here")
    p.add_argument("--merge", type=Path, nargs="+", metavar="SUITE_JSON",
                   help="train nothing: join these suite.json files (same options, other seeds "
                        "or sets) into one suite in --out; the other options are not used")
    args = p.parse_args(argv)
    args.sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    if unknown := [s for s in args.sets if s not in data.SUITE]:
        p.error(f"--sets: unknown {unknown}; choose from {sorted(data.SUITE)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError as e:
        p.error(f"--seeds {args.seeds!r}: {e}")
    if min(args.seeds) < 0:
        p.error(f"--seeds {args.seeds}: must be >= 0")
    for name in ("minutes", "minutes_64"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be > 0")
    for name, least in (("fid_samples", 4), ("reference_images", 4), ("points", 1),
                        ("curve_samples", 2)):  # precision/recall (k = 3) needs 4 images
        if getattr(args, name) < least:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: at least {least}")
    return args


def agree(key: str, a: Any, b: Any) -> bool:
    """Whether two files' records of one set agree on ``key``. References agree on their image
    count and the set's fingerprint (where both record one: older suites did not), not on the
    statistics file, whose cached name depends on where the set was built and when."""
    if key != "reference":
        return a == b
    return all(a[k] == b[k] for k in {"images", "data"} & a.keys() & b.keys())


def merge(paths: list[Path]) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Several suite.json files as one suite: each set's seeds together and summarised again,
    the options they share, and each file's machine with the (set, seed) pairs it ran. Files
    whose options (but the seeds) or whose sets' settings differ are refused."""
    rows: dict[str, dict[str, Any]] = {}
    options: dict[str, Any] | None = None
    machines = []
    for path in paths:
        try:
            record = json.loads(path.read_text())
            theirs = {k: v for k, v in record["options"].items() if k != "seeds"}
            sets = record["sets"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"--merge {path}: not a suite.json written by python -m "
                             f"bench.quality ({e})") from e
        if options is None:
            options, first = theirs, path
        for key in sorted(set(options) | set(theirs)):
            if options.get(key) != theirs.get(key):
                raise SystemExit(f"--merge {path}: option {key} = {theirs.get(key)!r}, but "
                                 f"{options.get(key)!r} in {first}; merge only suites run with "
                                 "the same options")
        ran = []
        for row in sets:
            known = rows.setdefault(row["set"], {**row, "seeds": []})
            for key in ("px", "preset", "minutes", "reference"):
                if not agree(key, known[key], row[key]):
                    raise SystemExit(f"--merge {path}: set {row['set']} has {key} = "
                                     f"{row[key]!r}, but {known[key]!r} in an earlier file")
            for seed in row["seeds"]:
                if any(s["seed"] == seed["seed"] for s in known["seeds"]):
                    raise SystemExit(f"--merge {path}: set {row['set']} seed {seed['seed']} "
                                     "is in an earlier file too")
                for kind in RUNS:
                    if not (path.parent / seed[kind]["grid"]).is_file():
                        raise SystemExit(f"--merge {path}: its sample grid {seed[kind]['grid']} "
                                         "is not beside it; merge each suite.json where it was "
                                         "written, with its grids")
                known["seeds"].append({**seed, "dir": path.parent})
                ran.append([row["set"], seed["seed"]])
        if isinstance(record["machine"], list):  # a merged suite: its machines say what ran
            machines += record["machine"]
        else:
            machines.append({**record["machine"], "ran": ran})
    assert options is not None  # argparse asks for at least one file
    merged = []
    for row in rows.values():
        row["seeds"].sort(key=lambda s: s["seed"])
        merged.append({**row, **summarise(row["seeds"])})
    return merged, {**options, "seeds": sorted({s["seed"] for r in merged for s in r["seeds"]})}, \
        machines


def write(rows: list[dict[str, Any]], options: dict[str, Any], machines: list[dict[str, Any]],
          out: Path) -> dict[str, Any]:
    """Print the table and geometric mean; write suite.md, suite.json and suite.png to ``out``,
    with each run's sample grid (copied there from a seed's ``dir``, when it has one)."""
    for row in rows:
        for seed in row["seeds"]:
            folder = Path(seed.pop("dir", out))
            if folder.resolve() != out.resolve():
                for kind in RUNS:
                    shutil.copyfile(folder / seed[kind]["grid"], out / seed[kind]["grid"])
    geomean = geomean_32px(rows)
    if len(machines) == 1:
        ran = describe(machines[0])
    else:
        ran = "\n".join(f"- {', '.join(f'{name} seed {seed}' for name, seed in m['ran'])}: "
                        f"{describe(m)}" for m in machines)
    seeds = ", ".join(map(str, options["seeds"]))
    text = (f"{ran}\n\nEach run trains for 'min' minutes of its CPU time on one thread, hitgan "
            f"and the baseline at the same time; FID, precision and recall of "
            f"{options['fid_samples']} samples against 'reals' real images of the set (a fixed "
            f"random subset); seeds {seeds}.\n\n{table(rows)}\n")
    if geomean is not None:
        sets = ", ".join(r["set"] for r in rows if r["px"] == 32)
        text += f"\nGeometric mean of the hitgan / baseline FID ratios at 32 px ({sets}): " \
                f"{geomean:.3f}\n"
    print("\n" + text)
    (out / "suite.md").write_text(text)
    record = {"machine": machines[0] if len(machines) == 1 else machines,
              "options": options, "sets": rows, "geomean_ratio_32px": geomean}
    (out / "suite.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(rows, out / "suite.png")
    print(f"wrote suite.json, suite.md, suite.png and the sample grids to {out}")
    return record


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        rows, options, machines = merge(args.merge)
        return write(rows, options, machines, args.out)
    info = start_run()
    extractor = InceptionExtractor()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hitgan-suite-") as tmp:
        for name in args.sets:
            spec = data.SUITE[name]
            preset = PRESETS[spec.resolution]
            minutes = args.minutes if spec.resolution == 32 else args.minutes_64
            source = data.source(name, args.data_dir)
            ref, ref_images = reference(source, spec.resolution, args, extractor)
            seeds = []
            for seed in args.seeds:
                runs = train_pair(name, source, preset, minutes, seed, ref.resolve(), args,
                                  Path(tmp))
                seeds.append({"seed": seed, **runs,
                              "ratio": runs["hitgan"]["fid"] / runs["baseline"]["fid"]})
            rows.append({"set": name, "kind": "grey" if spec.grey else "colour",
                         "images": spec.images, "px": spec.resolution, "preset": preset,
                         "minutes": minutes,
                         "reference": {"file": ref.name, "images": ref_images,
                                       "data": data.fingerprint(source)},
                         **summarise(seeds), "seeds": seeds})
    options = {"minutes": args.minutes, "minutes_64": args.minutes_64, "seeds": args.seeds,
               "fid_samples": args.fid_samples, "reference_images": args.reference_images,
               "points": args.points, "curve_samples": args.curve_samples,
               "clock": "CPU time, 1 thread per run, both runs at once"}
    return write(rows, options, [info], args.out)


if __name__ == "__main__":
    main()
