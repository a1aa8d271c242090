"""How many of an unconditional generator's samples read as a clear instance of one class? A
number for "most of the digits are well formed", beside the eye's judgement of a grid.

    python -m bench.quality.legible --run runs/quickstart        # the quickstart's generator

The classifier of ``hitgan.metrics.classifier`` (a small CNN) trains for ``--epochs`` on a fixed
80% of the labelled data (``--data``, the built-in ``mnist`` by default), read with the
generator's channel count. A sample is *legible* when the classifier gives one class a
probability of at least ``--confidence``. Printed: the legible fraction of ``--samples`` samples
of the run's G_ema (seeds 0..N-1, clamped to [-1, 1] as saved; BatchNorm recalibrated as
``hitgan generate`` does) beside that of the real test
split (the classifier is not perfect: real digits do not all pass either), and how the legible
samples spread over the classes (a generator that makes one good digit shape scores high on
legibility and low on coverage). A CNN can be confident about nonsense, so this is a proxy: look
at the grid too.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from bench.common import describe, start_run
from hitgan.data.dataset import Preprocess
from hitgan.load import load_generator
from hitgan.metrics.classifier import Classifier, load_labelled, split, train_classifier
from hitgan.sampling import seed_latents


@torch.no_grad()
def confidence(model: Classifier, images: torch.Tensor, batch: int = 256
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (N, C, R, R): the classifier's highest class probability and that class."""
    probs = torch.cat([model(x).softmax(1) for x in images.split(batch)])
    return probs.max(1)


def legible_summary(conf: torch.Tensor, classes: torch.Tensor, threshold: float,
                    num_classes: int) -> dict[str, Any]:
    """The legible fraction and, of the legible images, each class's share."""
    ok = conf >= threshold
    counts = torch.bincount(classes[ok], minlength=num_classes).tolist()
    n = max(1, int(ok.sum()))
    return {"legible": float(ok.float().mean()), "class_shares": [c / n for c in counts]}


@torch.no_grad()
def samples(run: str, n: int, batch: int = 250) -> torch.Tensor:
    """(n, C, R, R) samples of the run's G_ema from seeds 0..n-1, as saved (in [-1, 1])."""
    G = load_generator(run).eval()  # as hitgan generate loads it: BatchNorm recalibrated
    if G.config.num_classes:
        raise SystemExit(f"{run}: its generator is class-conditional; score class obedience "
                         "with python -m bench.quality.conditional --run")
    z = seed_latents(range(n), G.config.latent_dim)
    return torch.cat([G(zs).clamp(-1, 1) for zs in z.split(batch)])


def score(args: argparse.Namespace) -> dict[str, Any]:
    fakes = samples(args.run, args.samples)
    _, channels, resolution, _ = fakes.shape
    images, labels, names = load_labelled(
        args.data, Preprocess(resolution, channels=channels), args.max_images)
    train, test = split(len(images))
    model = train_classifier(images[train], labels[train], len(names), args.epochs, args.seed)
    real = legible_summary(*confidence(model, images[test]), args.confidence, len(names))
    fake = legible_summary(*confidence(model, fakes), args.confidence, len(names))
    return {"run": args.run, "data": args.data, "classes": list(names),
            "confidence": args.confidence, "samples": args.samples,
            "classifier": {"train_images": len(train), "test_images": len(test),
                           "epochs": args.epochs},
            "generated": fake, "real_test": real}


def report(result: dict[str, Any]) -> str:
    def shares(s: dict[str, Any]) -> str:
        return " ".join(f"{name}:{share:.0%}" for name, share in
                        zip(result["classes"], s["class_shares"], strict=True))

    gen, real = result["generated"], result["real_test"]
    return (f"legible (one class at probability >= {result['confidence']:g}): generated "
            f"{gen['legible']:.1%} of {result['samples']}, real test split {real['legible']:.1%} "
            f"of {result['classifier']['test_images']}\n"
            f"classes of the legible generated samples: {shares(gen)}\n"
            f"classes of the legible real test images:  {shares(real)}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.quality.legible",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a run or checkpoint directory")
    p.add_argument("--data", default="mnist", help="labelled images of the run's classes")
    p.add_argument("--samples", type=int, default=1000, help="generated samples to score")
    p.add_argument("--confidence", type=float, default=0.9,
                   help="the class probability a legible image reaches")
    p.add_argument("--epochs", type=int, default=4, help="classifier training epochs")
    p.add_argument("--max-images", type=int, help="of the labelled data (a fixed subset)")
    p.add_argument("--seed", type=int, default=0, help="the classifier's training seed")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    if not 0 < args.confidence < 1:
        p.error(f"--confidence {args.confidence}: must be in (0, 1)")
    for name in ("samples", "epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name} {getattr(args, name)}: must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    info = start_run()
    result = {**score(args), "machine": info, "argv": sys.argv[1:] if argv is None else argv}
    print(describe(info))
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            f.write(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
