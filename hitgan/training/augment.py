"""DiffAugment (Zhao et al., 2020) as in the official utils/diff_augment.py, on NCHW batches.

Randomness comes from an explicit CPU ``torch.Generator``. Parameters are drawn for the whole
global batch (``total`` images) and this process keeps ``rows``, so a run gives the same
augmentations whatever the number of processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def color(x: torch.Tensor, gen: torch.Generator, total: int, rows: slice) -> torch.Tensor:
    brightness, saturation, contrast = (
        torch.rand(total, 1, 1, 1, generator=gen)[rows].to(x) for _ in range(3))
    x = x + (brightness - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (saturation * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (contrast + 0.5) + mean


def translation(x: torch.Tensor, gen: torch.Generator, total: int, rows: slice,
                ratio: float = 0.125) -> torch.Tensor:
    """Shift by up to ratio*size pixels along each axis; uncovered pixels become zero."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (total,), generator=gen)[rows].to(x.device)
    tx = torch.randint(-sw, sw + 1, (total,), generator=gen)[rows].to(x.device)
    # index into a 1-pixel zero-padded copy: 0 and size+1 are the zero border
    ys = (torch.arange(h, device=x.device)[None] + ty[:, None] + 1).clamp(0, h + 1)  # (B, H)
    xs = (torch.arange(w, device=x.device)[None] + tx[:, None] + 1).clamp(0, w + 1)  # (B, W)
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (B, H+2, W+2, C)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, gen: torch.Generator, total: int, rows: slice,
           ratio: float = 0.5) -> torch.Tensor:
    """Zero a (ratio*size)^2 square centred at a random point, clipped at the borders."""
    _, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (total,), generator=gen)[rows].to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (total,), generator=gen)[rows].to(x.device)
    top, left = (oy - ch // 2)[:, None], (ox - cw // 2)[:, None]
    ys, xs = torch.arange(h, device=x.device)[None], torch.arange(w, device=x.device)[None]
    in_y = (ys >= top) & (ys < top + ch)  # (B, H)
    in_x = (xs >= left) & (xs < left + cw)  # (B, W)
    keep = ~(in_y[:, :, None] & in_x[:, None, :])  # (B, H, W)
    return x * keep[:, None].to(x.dtype)


AUGMENT_FNS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: str, gen: torch.Generator, offset: int = 0,
                 total: int | None = None) -> torch.Tensor:
    """Apply the comma-separated ``policy``; ``x`` holds rows [offset, offset + B) of a global
    batch of ``total`` (default: just ``x``)."""
    rows = slice(offset, offset + x.shape[0])
    for name in policy.split(","):
        x = AUGMENT_FNS[name](x, gen, total or x.shape[0], rows)
    return x
