"""Image quality per CPU-minute on one dataset: hitgan against a plain DCGAN BASELINE
(bench/quality/baseline.py), each trained for the same wall-clock minutes on the same data, one
after the other on the whole machine, then FID of snapshots taken along the way.

    python -m bench.quality.compare --minutes 20                      # built-in MNIST digits
    python -m bench.quality.compare --data fashion.zip --minutes 20 --flip

Each run trains for ``--minutes`` of its own training time (data loading included; model set-up
and the snapshots themselves excluded) and keeps ``--points`` snapshots of its sampling
generator (hitgan: G_ema with BatchNorm recalibrated as the trainer samples; DCGAN: G). After all
training, every snapshot is scored: FID of ``--curve-samples`` samples, and FID, precision and
recall (k = 3, Inception features: hitgan.metrics.pr) of ``--fid-samples`` at the last point,
against the Inception statistics of the whole dataset (cached; or ``--reference stats.npz``).
``--variant NAME:OPT=VALUE,...`` adds hitgan runs with other training options (repeatable;
``recipe=official`` picks the recipe), for recipe experiments.
``--score-g`` also scores each hitgan run's G itself, as a row 'NAME (G)': weight averaging does
not change training, so one run measures a run with and without an EMA.
Prints a table, writes JSON, an FID-vs-minutes plot and each run's last 64 samples as a grid.
``python -m bench.quality`` runs this on several datasets, hitgan and baseline side by side.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from bench.common import describe, markdown_table, start_run
from bench.quality.baseline import BaselineConfig, DCGANTrainer
from hitgan.data.dataset import ImageDataset, Preprocess
from hitgan.data.images import make_grid, save_image, to_uint8
from hitgan.distributed import DistInfo
from hitgan.metrics.evaluate import SEED_STRIDE, evaluate, load_reference, metric_name
from hitgan.metrics.features import InceptionExtractor
from hitgan.models.config import get_preset
from hitgan.sampling import seed_latents
from hitgan.training.config import build_config
from hitgan.training.loop import Trainer

BASELINE = "dcgan baseline"


@dataclass
class Run:
    name: str
    options: dict[str, Any]  # hitgan: the resolved training options; baseline: its config
    batch: int
    steps: int = 0
    seconds: float = 0.0
    # minutes, step, images, fid, samples; the last point also precision and recall
    points: list[dict[str, Any]] = field(default_factory=list)

    @property
    def images(self) -> int:
        return self.steps * self.batch

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def _progress(message: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def clock(kind: str) -> Any:
    """Seconds: wall clock, or this process's CPU time over its thread count (the time of an
    otherwise idle machine, for runs that share the machine with other work)."""
    if kind == "wall":
        return time.perf_counter
    threads = torch.get_num_threads()
    return lambda: time.process_time() / threads


def clock_label(args: argparse.Namespace) -> str:
    kind = "wall clock" if args.clock == "wall" else "CPU time / threads"
    return kind + (f", {args.threads} thread{'s' * (args.threads > 1)}" if args.threads else "")


def train_for(name: str, step: Any, batch: int, budget_s: float, marks: list[float],
              snapshot: Any, args: argparse.Namespace
              ) -> tuple[int, float, list[tuple[float, int, Any]]]:
    """Call ``step()`` until ``budget_s`` seconds of it (by ``--clock``, on ``--threads``) have
    passed; ``snapshot()`` at each mark. Returns steps, seconds and [(seconds, step, snapshot)].
    """
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _timed_steps(name, step, batch, budget_s, marks, snapshot, clock(args.clock))
    finally:
        torch.set_num_threads(threads)  # scoring uses the whole machine


def _timed_steps(name: str, step: Any, batch: int, budget_s: float, marks: list[float],
                 snapshot: Any, now: Any) -> tuple[int, float, list[tuple[float, int, Any]]]:
    steps, spent, snaps, todo = 0, 0.0, [], list(marks)
    report = time.perf_counter()
    while todo:
        t0 = now()
        stats = step()
        spent += now() - t0
        steps += 1
        while todo and spent >= todo[0]:
            snaps.append((spent, steps, snapshot()))
            todo.pop(0)
        if time.perf_counter() - report > 60:
            report = time.perf_counter()
            ada = f", ADA's p {stats['ada/p']:.3f}" if isinstance(stats, dict) and \
                "ada/p" in stats else ""
            _progress(f"{name}: {spent / 60:.1f} of {budget_s / 60:.1f} min, step {steps}, "
                      f"{steps * batch / spent:.1f} img/s{ada}")
    return steps, spent, snaps


def train_hitgan(name: str, overrides: dict[str, Any], args: argparse.Namespace,
                 marks: list[float], workdir: str) -> tuple[Run, Trainer, list]:
    """Train one hitgan run; each snapshot is {"ema": state} (and "G" with --score-g)."""
    options = dict(overrides)
    recipe = options.pop("recipe", None)  # None: hitgan's default for the preset
    cfg = build_config({"data": args.data, "preset": args.preset, "flip": args.flip,
                        "workers": args.workers, "seed": args.seed,
                        "out": f"{workdir}/{name}", **options}, recipe=recipe)
    trainer = Trainer(cfg, DistInfo(), progress=False)

    def snapshot() -> dict[str, dict[str, torch.Tensor]]:
        models = {"ema": trainer.ema.model, **({"G": trainer.G} if args.score_g else {})}
        return {k: copy.deepcopy(m.state_dict()) for k, m in models.items()}

    _progress(f"{name}: training for {args.minutes} min ({cfg.to_dict()})")
    steps, spent, snaps = train_for(name, trainer.train_step, cfg.batch, args.minutes * 60,
                                    marks, snapshot, args)
    if trainer.ada is not None:  # where adaptive augmentation ended
        _progress(f"{name}: ADA's p {trainer.ada.p:.3f}, last r_t {trainer.ada.rt}")
    run = Run(name, cfg.to_dict(), cfg.batch, steps, spent)
    return run, trainer, snaps


def train_baseline(args: argparse.Namespace, marks: list[float]) -> tuple[Run, Any, list]:
    res = get_preset(args.preset).generator.resolution
    data = ImageDataset(args.data, Preprocess(res), progress=False)
    cfg = BaselineConfig(resolution=res, batch=min(BaselineConfig.batch, len(data)))
    trainer = DCGANTrainer(cfg, args.seed)
    loader = DataLoader(data, cfg.batch, shuffle=True, drop_last=True,
                        num_workers=args.workers, generator=torch.Generator().manual_seed(0))
    stream = iter(())

    def step() -> None:
        nonlocal stream
        reals = next(stream, None)
        if reals is None:  # a new epoch
            stream = iter(loader)
            reals = next(stream)
        if args.flip:
            reals = torch.where(torch.rand(len(reals), 1, 1, 1) < 0.5, reals.flip(3), reals)
        trainer.train_step(reals)

    def snapshot() -> dict[str, torch.Tensor]:
        return copy.deepcopy(trainer.G.state_dict())

    _progress(f"{BASELINE}: training for {args.minutes} min ({asdict(cfg)})")
    steps, spent, snaps = train_for(BASELINE, step, cfg.batch, args.minutes * 60, marks,
                                    snapshot, args)
    return Run(BASELINE, asdict(cfg), cfg.batch, steps, spent), trainer, snaps


def score(run: Run, load: Any, snaps: list, reference: Any,
          extractor: InceptionExtractor, args: argparse.Namespace, grid: Path) -> None:
    """FID of every snapshot, and precision and recall of the last (from the same samples);
    ``load(state)`` gives the sampling generator of a snapshot. The last snapshot's first 64
    samples are saved as ``grid`` (to see what the FID scored)."""
    for k, (seconds, steps, state) in enumerate(snaps):
        last = k == len(snaps) - 1
        n = args.fid_samples if last else args.curve_samples
        G = load(state)
        if last:
            with torch.inference_mode():
                z = seed_latents(range(args.seed * SEED_STRIDE, args.seed * SEED_STRIDE + 64),
                                 G.config.latent_dim)
                save_image(make_grid(to_uint8(G.eval()(z))), grid)
        result = evaluate(G, reference, ("fid", "pr") if last else ("fid",), n,
                          seed=args.seed, extractor=extractor, progress=False).results
        fid = result[metric_name("fid", n, reference)]
        point = {"minutes": round(seconds / 60, 2), "step": steps,
                 "images": steps * run.batch, "fid": round(fid, 3), "samples": n}
        if last:
            pr = metric_name("pr", n, reference)
            point |= {m: round(result[f"{pr}_{m}"], 4) for m in ("precision", "recall")}
        run.points.append(point)
        _progress(f"{run.name}: {seconds / 60:.1f} min, step {steps}: FID-{n} {fid:.2f}")


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """'name:opt=value,opt=value' -> (name, {opt: value}); values as JSON where they parse."""
    name, _, spec = text.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, spec.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--variant {text!r}: write OPT=VALUE pairs, e.g. "
                             "fast:penalty_every=16,d_width=0.5")
        try:
            options[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip().replace("-", "_")] = value
    if not name:
        raise ValueError(f"--variant {text!r}: give the run a name before the colon")
    return name, options


def plot(runs: list[Run], path: Path, title: str, xlabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        ax.plot([p["minutes"] for p in run.points], [p["fid"] for p in run.points], "o-",
                label=run.name)
    ax.set(xlabel=xlabel, ylabel="FID", title=title,
           yscale="log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stem(data: str, preset: str, minutes: float) -> str:
    """The name of a run's JSON and plot (``STEM.json``, ``STEM.png``) and grids."""
    return f"quality-{Path(data).stem}-{preset}-{minutes:g}min"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.quality.compare",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="mnist", help="image folder, zip, or 'mnist'")
    p.add_argument("--preset", default="hit-tiny-32")
    p.add_argument("--minutes", type=float, default=20, help="training time of each run")
    p.add_argument("--points", type=int, default=4, help="snapshots per run, evenly in time")
    p.add_argument("--fid-samples", type=int, default=5000,
                   help="samples at the last point (FID, precision and recall; at least 4)")
    p.add_argument("--curve-samples", type=int, default=1000,
                   help="samples at the earlier points")
    p.add_argument("--reference", help="a .npz from `hitgan stats` (default: the whole "
                   "dataset's statistics, cached in --cache-dir)")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "hitgan" / "stats"))
    p.add_argument("--variant", action="append", default=[], metavar="NAME:OPT=VALUE,...",
                   help="a hitgan run with these training options (repeatable); default: "
                   "one run, 'hitgan', with the default recipe")
    p.add_argument("--score-g", action="store_true",
                   help="also score each hitgan run's G itself (row 'NAME (G)'): with an EMA, "
                   "the same run without one")
    p.add_argument("--no-baseline", action="store_true", help="skip the DCGAN baseline")
    p.add_argument("--baseline-only", action="store_true",
                   help="train only the baseline (e.g. in a second process beside a "
                   "--no-baseline one, each on its own core)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=False,
                   help="random horizontal flips for both (off: a mirrored digit is no digit)")
    p.add_argument("--workers", type=int, default=0,
                   help="data loading processes (with --clock cpu, their time is not counted)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="budget by wall clock, or by CPU time / threads (an idle machine's "
                   "minutes: fair when other work shares the machine)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads while training (0: torch's default). With --clock cpu, "
                   "1 thread makes each run's time immune to other work on the machine "
                   "(several threads spin-wait, and that counts as CPU time)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/quality", help="JSON, table and plot go here")
    args = p.parse_args(argv)
    for name in ("minutes",):
        if getattr(args, name) <= 0:
            p.error(f"--{name} {getattr(args, name)}: must be > 0")
    if args.threads < 0:
        p.error(f"--threads {args.threads}: must be >= 0 (0: torch's default)")
    for name, least in (("points", 1), ("fid_samples", 4), ("curve_samples", 2)):
        if getattr(args, name) < least:  # FID needs 2 samples; precision/recall (k=3) 4
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: at least {least}")
    if args.baseline_only and (args.no_baseline or args.variant):
        p.error("--baseline-only trains the baseline alone: drop --no-baseline and --variant")
    try:
        args.variants = [] if args.baseline_only else (
            [parse_variant(v) for v in args.variant] or [("hitgan", {})])
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv: list[str] | None = None) -> list[Run]:
    args = parse_args(argv)
    info = start_run()
    res = get_preset(args.preset).generator.resolution
    marks = [args.minutes * 60 * (k + 1) / args.points for k in range(args.points)]
    extractor = InceptionExtractor()
    reference, described = load_reference(args.reference or args.data, Preprocess(res),
                                          extractor, args.cache_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = out / stem(args.data, args.preset, args.minutes)

    def grid(run_name: str) -> Path:  # 'fast (G)' -> STEM-fast-G.png
        slug = run_name.replace(" (", "-").replace(")", "").replace(" ", "_")
        return Path(f"{base}-{slug}.png")

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="hitgan-quality-") as tmp:
        for name, overrides in args.variants:
            run, trainer, snaps = train_hitgan(name, overrides, args, marks, tmp)

            def load(state: dict[str, torch.Tensor], trainer: Trainer = trainer) -> Any:
                trainer.ema.model.load_state_dict(state)
                return trainer.sampling_generator()

            for key in ("ema", "G") if args.score_g else ("ema",):
                scored = run if key == "ema" else dataclasses.replace(
                    run, name=f"{name} (G)", points=[])
                score(scored, load, [(t, n, s[key]) for t, n, s in snaps], reference, extractor,
                      args, grid(scored.name))
                runs.append(scored)
            del trainer, snaps
        if not args.no_baseline:
            run, baseline, snaps = train_baseline(args, marks)

            def load_baseline(state: dict[str, torch.Tensor]) -> Any:
                baseline.G.load_state_dict(state)
                return baseline.G

            score(run, load_baseline, snaps, reference, extractor, args, grid("baseline"))
            runs.append(run)
    print(describe(info))
    print(f"data {args.data} at {res}px, reference {described}; each run {args.minutes} min "
          f"({clock_label(args)})\n")
    header = ["run", "steps", "images", "img/s"] + [
        f"FID @ {p['minutes']:.1f} min" for p in runs[0].points]
    rows = [[r.name, r.steps, r.images, f"{r.images_per_s:.1f}"]
            + [f"{p['fid']:.2f} ({p['samples']})" for p in r.points] for r in runs]
    print(markdown_table(header, rows))
    finals = "; ".join(f"{r.name} {r.points[-1]['fid']:.2f} (precision "
                       f"{r.points[-1]['precision']:.3f}, recall {r.points[-1]['recall']:.3f})"
                       for r in runs)
    print(f"\nFID-{args.fid_samples} after {args.minutes} min: {finals}")
    Path(f"{base}.json").write_text(json.dumps(
        {"machine": info, "argv": sys.argv[1:] if argv is None else argv,
         "reference": described,
         "runs": [{**asdict(r), "images": r.images, "images_per_s": r.images_per_s}
                  for r in runs]}, indent=2))
    plot(runs, Path(f"{base}.png"), f"{args.preset} on {args.data}, {args.minutes:g} min "
         f"each", f"training minutes ({clock_label(args)}, this machine)")
    print(f"wrote {base}.json and .png")
    return runs


if __name__ == "__main__":
    main()
