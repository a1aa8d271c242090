"""Feature statistics of a set of images: features, mean and covariance, and what made them.

A statistics file is an ``.npz`` read with ``allow_pickle=False``: ``features`` (N, 2048) float32,
``mu`` (2048,) and ``sigma`` (2048, 2048) float64, and ``meta``, a JSON string recording the
dataset and its preprocessing (``ImageDataset.describe()``), the feature protocol and the
extractor's sha256. ``check_reference`` refuses a comparison whose protocol differs. Files are
written atomically (temp + rename); ``cached_dataset_stats`` keys a cache by a hash of its
arguments, as StyleGAN2-ADA's dataset statistics cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from hitgan.data.dataset import BUILTIN, ImageDataset, Preprocess
from hitgan.metrics.features import PROTOCOL, InceptionExtractor, quantize
from hitgan.metrics.fid import mean_cov
from hitgan.metrics.prefetch import prefetch
from hitgan.models.io import atomic_write

STATS_FORMAT = "hitgan-stats"
STATS_VERSION = 1


class StatsError(ValueError):
    """A statistics file that is unreadable or does not fit the comparison asked for."""


@dataclass
class FeatureStats:
    features: np.ndarray  # (N, D) float32
    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    meta: dict[str, Any]

    @classmethod
    def from_features(cls, features: np.ndarray, meta: dict[str, Any]) -> FeatureStats:
        return cls(features.astype(np.float32), *mean_cov(features), meta)


def extract_features(dataset: Dataset, extractor: InceptionExtractor, batch: int = 64,
                     device: str | torch.device | None = None, workers: int = 0,
                     progress: bool = True) -> tuple[np.ndarray, float]:
    """Features of a dataset of (3, H, W) images in [-1, 1] (quantised to uint8 first), and the
    seconds the extractor took. Batches are decoded (by ``workers`` processes, or in a thread
    when 0) while the extractor runs. ``device``: default the current CUDA device if any."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, shuffle=False)
    extractor = extractor.to(device)
    features, seconds = [], 0.0
    for images in tqdm(prefetch(loader), desc="features", unit="batch", total=len(loader),
                       disable=not progress):
        start = time.perf_counter()
        features.append(extractor(quantize(images.to(device))).cpu())
        seconds += time.perf_counter() - start
    return torch.cat(features).numpy(), seconds


def subset_indices(size: int, max_images: int | None) -> np.ndarray:
    """The images statistics of ``max_images`` of a dataset of ``size`` use: a fixed random
    subset (seed 0), sorted; all of them when there are no more."""
    n = size if max_images is None else min(max_images, size)
    if n == size:
        return np.arange(size)
    return np.sort(np.random.default_rng(0).choice(size, n, replace=False))


def dataset_stats(dataset: ImageDataset, extractor: InceptionExtractor,
                  max_images: int | None = None, **kwargs: Any) -> FeatureStats:
    """Statistics of a dataset, or of ``max_images`` of it (``subset_indices``)."""
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    subset: Dataset = dataset
    if n < len(dataset):
        subset = Subset(dataset, subset_indices(len(dataset), max_images).tolist())
    features, seconds = extract_features(subset, extractor, **kwargs)
    meta = {"format": STATS_FORMAT, "version": STATS_VERSION, "dataset": dataset.describe(),
            "images": n, "subset": "all" if n == len(dataset) else "random, seed 0",
            "protocol": PROTOCOL, "extractor": extractor.identity,
            "extraction": {"seconds": round(seconds, 3),
                           "images_per_s": round(n / max(seconds, 1e-9), 2)}}
    return FeatureStats.from_features(features, meta)


def save_stats(stats: FeatureStats, path: str | os.PathLike[str]) -> None:
    buf = io.BytesIO()
    np.savez(buf, features=stats.features, mu=stats.mu, sigma=stats.sigma,
             meta=np.array(json.dumps(stats.meta)))
    atomic_write(Path(path), buf.getvalue())


def load_stats(path: str | os.PathLike[str]) -> FeatureStats:
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            stats = FeatureStats(data["features"], data["mu"], data["sigma"], meta)
    except FileNotFoundError as e:
        raise StatsError(f"{path}: no such statistics file; make one with "
                         "`hitgan stats DATASET --resolution R -o FILE.npz`") from e
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise StatsError(f"{path}: not a readable hitgan statistics file "
                         f"({type(e).__name__}: {e}); remake it with `hitgan stats`") from e
    if meta.get("format") != STATS_FORMAT or meta.get("version") != STATS_VERSION:
        raise StatsError(f"{path}: format {meta.get('format')!r} v{meta.get('version')}, not "
                         f"{STATS_FORMAT!r} v{STATS_VERSION}; remake it with `hitgan stats`")
    return stats


def check_reference(meta: dict[str, Any], image_size: tuple[int, int],
                    extractor: InceptionExtractor, source: str) -> None:
    """Refuse to compare images of ``image_size`` (H, W) against statistics made differently."""
    problems = []
    res = meta["dataset"]["resolution"]
    ref_size = (round(res / meta["dataset"]["aspect_ratio"]), res)
    if ref_size != tuple(image_size):
        problems.append(f"resolution: statistics of {ref_size[0]}x{ref_size[1]} images, the "
                        f"generator makes {image_size[0]}x{image_size[1]} (make statistics "
                        f"with --resolution {image_size[1]})")
    if meta["protocol"] != PROTOCOL:
        changed = sorted(k for k in PROTOCOL if meta["protocol"].get(k) != PROTOCOL[k])
        problems.append(f"feature protocol differs in {', '.join(changed) or 'its fields'}")
    theirs, ours = meta["extractor"], extractor.identity
    if theirs["sha256"] != ours["sha256"]:
        problems.append(f"extractor: statistics made with {theirs['file']} "
                        f"(sha256 {theirs['sha256'][:12]}), now {ours['file']} "
                        f"(sha256 {ours['sha256'][:12]})")
    if problems:
        raise StatsError(f"{source}: cannot compare: " + "; ".join(problems))


def kind_note(meta: dict[str, Any], extractor: InceptionExtractor) -> str | None:
    """A line saying that statistics came from the other implementation of the same weights
    (``check_reference`` allows it: their features agree to 3e-5 of their scale and FID to
    0.01, docs/evaluation.md), or None. Files made before the fast extractor are ``reference``.
    """
    theirs = meta["extractor"].get("kind", "reference")
    ours = extractor.identity.get("kind", "reference")
    if theirs == ours:
        return None
    return (f"note: the reference statistics come from the {theirs} extractor, the samples' "
            f"features from the {ours} one (the same weights and protocol; their FIDs agree to "
            f"0.01, docs/evaluation.md); --extractor {theirs} uses the same one for both")


def cache_key(source: str, preprocess: Preprocess, extractor: InceptionExtractor,
              max_images: int | None) -> str:
    """Hash of what determines the statistics: the dataset path and its modification time,
    preprocessing, extractor, protocol and image count. A dataset edited without changing
    its path's mtime (a file replaced deep inside a folder) needs the cache entry deleted."""
    where: dict[str, Any] = {"source": source}
    if source not in BUILTIN:
        path = Path(source).resolve()
        where = {"source": str(path), "mtime_ns": path.stat().st_mtime_ns,
                 "bytes": path.stat().st_size}
    args = {**where, "preprocess": preprocess.describe(), "extractor": extractor.identity,
            "protocol": PROTOCOL, "max_images": max_images, "version": STATS_VERSION}
    return hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()


def cached_dataset_stats(source: str, preprocess: Preprocess, extractor: InceptionExtractor,
                         cache_dir: str | os.PathLike[str], max_images: int | None = None,
                         **kwargs: Any) -> tuple[FeatureStats, Path, bool]:
    """Statistics of a dataset from the cache, computed and stored there when missing.

    Returns the statistics, the cache file, and whether it was a hit."""
    if source not in BUILTIN and not Path(source).exists():
        raise StatsError(f"{source}: no such dataset or statistics file (a folder, a .zip, a "
                         f".npz from `hitgan stats`, or one of {BUILTIN})")
    key = cache_key(source, preprocess, extractor, max_images)
    path = Path(cache_dir) / f"{Path(source).stem}-{preprocess.resolution}px-{key[:16]}.npz"
    if path.exists():
        return load_stats(path), path, True
    stats = dataset_stats(ImageDataset(source, preprocess), extractor, max_images, **kwargs)
    save_stats(stats, path)
    return stats, path, False
