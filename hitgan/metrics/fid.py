"""Fréchet distance between Gaussians fitted to features, in float64, without scipy.

FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2). The last trace is the sum
of the square roots of the eigenvalues of the symmetric PSD product P = S1^1/2 S2 S1^1/2, which
are the singular values of S2^1/2 S1^1/2 (its Gram matrix is P). Both square roots come from
``eigh`` with round-off negatives clipped to zero, and the trace is taken as that nuclear norm:
forming P squares the spectrum, so its round-off eigenvalues near zero (about 1e-16 of the
largest squared) would add about 1e-8 of it each after the square root, thousands of times for
the rank-deficient covariances of a few hundred images; the singular values of the unsquared
product do not. scipy's general ``sqrtm(S1 @ S2)`` (StyleGAN, pytorch-fid) agrees on
well-conditioned inputs (tests).
"""

from __future__ import annotations

import numpy as np


def mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> mean (D,) and unbiased covariance (D, D) in float64, as ``np.cov``."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features of shape {features.shape}: need (N, D) with N >= 2 images")
    x = features.astype(np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix via ``eigh``."""
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2), in float64."""
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in size: mu {mu1.shape} vs {mu2.shape}, sigma "
                         f"{sigma1.shape} vs {sigma2.shape}; were they made by one extractor?")
    mu1, mu2 = mu1.astype(np.float64), mu2.astype(np.float64)
    sigma1, sigma2 = sigma1.astype(np.float64), sigma2.astype(np.float64)
    product = sqrtm_psd(sigma2) @ sqrtm_psd(sigma1)
    trace_sqrt = np.linalg.svd(product, compute_uv=False).sum()  # tr (S1^½ S2 S1^½)^½
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two (N, D) feature arrays."""
    return frechet_distance(*mean_cov(a), *mean_cov(b))
