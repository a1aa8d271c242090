"""Improved precision and recall (Kynkäänniemi et al. 2019), as StyleGAN2-ADA's ``pr50k3``.

Each set's manifold is the union of balls around its points, a ball's radius the distance to
the point's k-th nearest neighbour in its own set (the point itself excluded). Precision: the
share of generated features inside the real manifold; recall: the share of real features inside
the generated one. StyleGAN measures this on VGG16 features; ours are the Inception pool
features (no VGG16 weights ship offline), so the numbers are not comparable with its
``pr50k3_full``.
"""

from __future__ import annotations

import numpy as np
import torch


def _radii(manifold: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    """Distance of every point to its k-th nearest neighbour in ``manifold``, itself excluded."""
    return torch.cat([torch.cdist(rows, manifold).kthvalue(k + 1, dim=1).values
                      for rows in manifold.split(batch)])


def _covered(probes: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor,
             batch: int) -> float:
    inside = [(torch.cdist(rows, manifold) <= radii).any(dim=1) for rows in probes.split(batch)]
    return torch.cat(inside).float().mean().item()


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, batch: int = 5000,
                     device: str | torch.device = "cpu") -> dict[str, float]:
    """{"precision", "recall"} of (N, D) features; distances in float32 in row blocks."""
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k}: need more than {k} real and generated "
                         f"features, got {len(real)} and {len(fake)}")
    r = torch.as_tensor(real, dtype=torch.float32, device=device)
    f = torch.as_tensor(fake, dtype=torch.float32, device=device)
    return {"precision": _covered(f, r, _radii(r, k, batch), batch),
            "recall": _covered(r, f, _radii(f, k, batch), batch)}
