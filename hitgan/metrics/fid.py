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

Against n <= D samples (an evaluation of 1,000 or 2,000 images in Inception's 2,048 dimensions)
``frechet_distance_to_features`` takes the trace in the samples' space instead: with X the
centred features over sqrt(n - 1), S2 = X^T X, and the nonzero eigenvalues of P equal those of
the n x n matrix X S1 X^T. One n x n ``eigh`` replaces two D x D ones and an SVD; the result is
the same (tests), in a fraction of the time. That eigenproblem squares the spectrum again (an
error near 1e-9 of the traces, about 1e-6 of an FID); from two sets of at most D features each,
``fid_from_features`` takes the singular values of Xa Xb^T instead, unsquared.
"""

from __future__ import annotations

import numpy as np


def mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> mean (D,) and unbiased covariance (D, D) in float64, as ``np.cov``."""
    mu, x = _centred(features)
    return mu, x.T @ x


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
    return _distance(mu1, mu2, np.trace(sigma1), np.trace(sigma2), trace_sqrt)


def frechet_distance_to_features(mu1: np.ndarray, sigma1: np.ndarray, features: np.ndarray
                                 ) -> float:
    """Fréchet distance of N(mu1, sigma1) and the Gaussian fitted to ``features`` (n, D), as
    ``frechet_distance(mu1, sigma1, *mean_cov(features))``; through an n x n eigenproblem when
    n <= D."""
    n, d = features.shape
    if n > d:
        return frechet_distance(mu1, sigma1, *mean_cov(features))
    mu2, x = _centred(features)  # S2 = x^T x
    if mu1.shape != mu2.shape or sigma1.shape != (d, d):
        raise ValueError(f"statistics differ in size: mu {mu1.shape} vs {mu2.shape}, sigma "
                         f"{sigma1.shape} vs features of {d} dimensions; were they made by one "
                         "extractor?")
    sigma1 = sigma1.astype(np.float64)
    gram = x @ sigma1 @ x.T  # (n, n), the nonzero spectrum of S1^½ S2 S1^½
    vals = np.linalg.eigvalsh((gram + gram.T) / 2)
    trace_sqrt = np.sqrt(np.clip(vals, 0, None)).sum()
    return _distance(mu1.astype(np.float64), mu2, np.trace(sigma1), np.einsum("ij,ij->", x, x),
                     trace_sqrt)


def _centred(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) -> mean (D,) and the centred rows over sqrt(n - 1), in float64: X^T X is the
    unbiased covariance."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features of shape {features.shape}: need (N, D) with N >= 2 images")
    x = features.astype(np.float64)
    mu = x.mean(axis=0)
    return mu, (x - mu) / np.sqrt(x.shape[0] - 1)


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two (N, D) feature arrays. With both N <= D the trace is the nuclear norm of
    Xa Xb^T (na x nb), whose singular values are the square roots sought, unsquared."""
    if len(b) > len(a):  # the smaller set's side of the eigenproblem
        a, b = b, a
    if len(a) > a.shape[1]:
        return frechet_distance_to_features(*mean_cov(a), b)
    (mu1, x1), (mu2, x2) = _centred(a), _centred(b)
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"features of {x1.shape[1]} and {x2.shape[1]} dimensions; were they "
                         "made by one extractor?")
    trace_sqrt = np.linalg.svd(x1 @ x2.T, compute_uv=False).sum()
    return _distance(mu1, mu2, np.einsum("ij,ij->", x1, x1), np.einsum("ij,ij->", x2, x2),
                     trace_sqrt)


def _distance(mu1: np.ndarray, mu2: np.ndarray, trace1: float, trace2: float,
              trace_sqrt: float) -> float:
    """|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr (S1^½ S2 S1^½)^½, from its parts."""
    diff = mu1 - mu2
    return float(diff @ diff + trace1 + trace2 - 2 * trace_sqrt)
