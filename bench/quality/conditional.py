"""Does a class-conditional generator make the class it is asked for? Trains a conditional run
and scores it with the classification accuracy score of ``hitgan.metrics.classifier``.

    python -m bench.quality.conditional --minutes 20 --out runs/cond-mnist   # train, then score
    python -m bench.quality.conditional --run runs/cond-mnist                # score a run

Training (``--minutes``) runs ``hitgan train --cond`` on ``--data`` for that many minutes of
``--clock`` time (default: CPU time on one thread, immune to other work on the machine, as
``bench.quality.compare --clock cpu --threads 1``), then writes a checkpoint and a sample grid to
the run directory. The classifier (a small CNN, hitgan/metrics/classifier.py) trains for
``--epochs`` on a fixed 80% of the labelled images, read with the generator's channel count, and
is tested on the other 20%; the generator (G_ema, BatchNorm statistics recalibrated as the
trainer samples) makes ``--per-class`` samples of every class from seeds 0..N-1. Prints
per-class and mean accuracy on generated samples beside the classifier's accuracy on the real
test split, and writes them as JSON into the run directory. Accuracy rewards one good image per
class as much as a varied class, so it also prints each class's spread (the mean over pixels of
the std over images) of the generated and of the real images: a class collapsed to one image has
a spread near 0 whatever its accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import describe, markdown_table, start_run
from bench.quality.compare import clock_label, parse_variant, train_for
from hitgan.data.dataset import Preprocess
from hitgan.distributed import DistInfo
from hitgan.metrics.classifier import (
    generated_scores,
    load_labelled,
    per_class_accuracy,
    predict,
    split,
    spread,
    train_classifier,
)
from hitgan.training.checkpoint import load_generator
from hitgan.training.config import build_config
from hitgan.training.loop import Trainer


def _progress(message: str) -> None:
    print(f"[conditional {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def train_generator(args: argparse.Namespace) -> dict[str, Any]:
    """``hitgan train --cond`` for ``--minutes`` of ``--clock`` time; a checkpoint and a sample
    grid in ``--out``. Returns what was run."""
    cfg = build_config({"data": args.data, "preset": args.preset, "cond": True,
                        "flip": args.flip, "workers": 0, "seed": args.seed, "out": args.out,
                        **args.options}, recipe=args.recipe)
    trainer = Trainer(cfg, DistInfo(), progress=False)
    _progress(f"training for {args.minutes} min ({clock_label(args)}): {cfg.to_dict()}")
    budget = args.minutes * 60
    steps, spent, _ = train_for("conditional", trainer.train_step, cfg.batch, budget, [budget],
                                lambda: None, args)
    checkpoint = trainer.save_checkpoint()
    grid = trainer.save_samples()
    _progress(f"{steps} steps in {spent / 60:.1f} min: {checkpoint}, {grid}")
    return {"options": cfg.to_dict(), "steps": steps, "images": steps * cfg.batch,
            "minutes": round(spent / 60, 2), "clock": clock_label(args)}


def score(args: argparse.Namespace) -> dict[str, Any]:
    """Classifier on the real split, then on the run's generated samples."""
    G = load_generator(args.run)
    cfg = G.config
    if not cfg.num_classes:
        raise SystemExit(f"{args.run}: its generator is unconditional (train it with --cond)")
    images, labels, names = load_labelled(
        args.data, Preprocess(cfg.resolution, channels=cfg.out_channels), args.max_images)
    if len(names) != cfg.num_classes:
        raise SystemExit(f"{args.data} has {len(names)} classes, the generator of {args.run} "
                         f"{cfg.num_classes}: score it on its own training data")
    train, test = split(len(images))
    start = time.perf_counter()
    model = train_classifier(images[train], labels[train], len(names), args.epochs, args.seed)
    predicted = predict(model, images[test])
    real = per_class_accuracy(predicted, labels[test], len(names))
    real_mean = float((predicted == labels[test]).float().mean())
    _progress(f"classifier: {len(train)} images x {args.epochs} epochs in "
              f"{time.perf_counter() - start:.0f} s; real test accuracy {real_mean:.4f}")
    G.recalibrate_batchnorm(args.bn_recalibrate, seed=args.seed).eval()
    fake, fake_spread = generated_scores(G, model, args.per_class)
    real_spread = [spread(images[labels == k]) for k in range(len(names))]
    ratio = [f / r for f, r in zip(fake_spread, real_spread, strict=True)]
    return {"run": str(args.run), "data": args.data, "classes": list(names),
            "classifier": {"train_images": len(train), "test_images": len(test),
                           "epochs": args.epochs},
            "real_test_accuracy": real_mean, "real_test_per_class": real,
            "generated_per_class_samples": args.per_class,
            "generated_accuracy": float(np.mean(fake)), "generated_per_class": fake,
            "generated_spread_per_class": fake_spread, "real_spread_per_class": real_spread,
            "spread_ratio": float(np.mean(ratio))}


def report(result: dict[str, Any]) -> str:
    rows = [[k, name, f"{fake:.3f}", f"{real:.3f}", f"{fs:.3f} / {rs:.3f}"]
            for k, (name, fake, real, fs, rs) in enumerate(zip(
                result["classes"], result["generated_per_class"], result["real_test_per_class"],
                result["generated_spread_per_class"], result["real_spread_per_class"],
                strict=True))]
    rows.append(["mean", "", f"{result['generated_accuracy']:.4f}",
                 f"{result['real_test_accuracy']:.4f}", f"ratio {result['spread_ratio']:.3f}"])
    n = result["generated_per_class_samples"]
    return (markdown_table(["class", "name", f"generated ({n} per class)",
                            f"real test ({result['classifier']['test_images']} images)",
                            "spread generated / real"], rows)
            + f"\n\nclassification accuracy: generated {result['generated_accuracy']:.4f} "
            f"(mean over classes), real test split {result['real_test_accuracy']:.4f}; "
            f"within-class spread {result['spread_ratio']:.3f} of the real digits'")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.quality.conditional",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="mnist", help="a labelled image folder, zip, or 'mnist'")
    p.add_argument("--run", help="score this run (or checkpoint) directory, no training")
    p.add_argument("--out", help="with --minutes: the run directory to train into")
    p.add_argument("--minutes", type=float, help="train a conditional generator this long")
    p.add_argument("--preset", default="hit-tiny-32")
    p.add_argument("--recipe", help="as hitgan train --recipe (default: hitgan's for the preset)")
    p.add_argument("--set", default="", metavar="OPT=VALUE,...",
                   help="training options, e.g. lr_g=1e-4,batch=32")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=False,
                   help="random horizontal flips (off: a mirrored digit is no digit)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="cpu",
                   help="budget by wall clock, or by CPU time / threads")
    p.add_argument("--threads", type=int, default=1, help="torch threads while training")
    p.add_argument("--per-class", type=int, default=1000, help="generated samples per class")
    p.add_argument("--epochs", type=int, default=4, help="classifier training epochs")
    p.add_argument("--max-images", type=int, help="of the labelled data (a fixed subset)")
    p.add_argument("--bn-recalibrate", type=int, default=4, metavar="BATCHES",
                   help="as hitgan generate's (0: the moving averages)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.minutes is None and args.run is None:
        p.error("give --minutes (with --out) to train and score, or --run to score a run")
    if args.minutes is not None:
        if args.minutes <= 0 or not args.out:
            p.error("--minutes must be > 0 and come with --out RUN_DIR")
        if args.run and args.run != args.out:
            p.error("--run and --out name different directories; --minutes trains into --out "
                    "and scores it")
        args.run = args.out
    for name in ("per_class", "epochs", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    try:
        args.options = parse_variant(f"run:{args.set}")[1]
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    info = start_run()
    trained = train_generator(args) if args.minutes is not None else None
    result = {**score(args), "training": trained, "machine": info,
              "argv": sys.argv[1:] if argv is None else argv}
    print(describe(info))
    if trained is not None:
        print(f"trained {trained['steps']} steps ({trained['images']} images) in "
              f"{trained['minutes']} min ({trained['clock']})")
    print(report(result))
    path = Path(args.run) / "conditional.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
