"""Kernel Inception Distance (Bińkowski et al. 2018), as StyleGAN2-ADA's ``kid50k_full``.

The unbiased estimate of the squared MMD with the cubic polynomial kernel
k(x, y) = (x . y / D + 1)^3, averaged over ``num_subsets`` random subsets of
m = min(len(real), len(fake), max_subset_size) features each (drawn without replacement).
"""

from __future__ import annotations

import numpy as np


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, num_subsets: int = 100,
                              max_subset_size: int = 1000,
                              rng: np.random.Generator | None = None) -> float:
    """KID of two (N, D) feature arrays; ``rng`` picks the subsets (default: seed 0)."""
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"KID: features of shapes {real.shape} and {fake.shape}: need (N, D) "
                         "arrays of one width")
    m = min(len(real), len(fake), max_subset_size)
    if m < 2:
        raise ValueError(f"KID: subsets of {m} feature(s); need at least 2 real and 2 generated")
    rng = rng or np.random.default_rng(0)
    d = real.shape[1]
    total = 0.0
    for _ in range(num_subsets):
        x = fake[rng.choice(len(fake), m, replace=False)].astype(np.float64)
        y = real[rng.choice(len(real), m, replace=False)].astype(np.float64)
        within = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3  # (m, m)
        across = (x @ y.T / d + 1) ** 3  # (m, m)
        total += ((within.sum() - np.trace(within)) / (m - 1) - across.sum() * 2 / m) / m
    return float(total / num_subsets)
