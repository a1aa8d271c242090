"""Evaluation: Inception features, FID, KID, precision/recall, dataset statistics."""

from hitgan.metrics.evaluate import METRICS, EvalResult, evaluate
from hitgan.metrics.features import ExtractorError, InceptionExtractor
from hitgan.metrics.fid import fid_from_features, frechet_distance
from hitgan.metrics.kid import kernel_inception_distance
from hitgan.metrics.pr import precision_recall
from hitgan.metrics.stats import FeatureStats, StatsError, load_stats, save_stats

__all__ = [
    "METRICS",
    "EvalResult",
    "ExtractorError",
    "FeatureStats",
    "InceptionExtractor",
    "StatsError",
    "evaluate",
    "fid_from_features",
    "frechet_distance",
    "kernel_inception_distance",
    "load_stats",
    "precision_recall",
    "save_stats",
]
