"""Converting generator outputs to pictures on disk."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, H, W, C) uint8; values outside are clipped."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _pil(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def make_grid(images: np.ndarray, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """(B, H, W, C) uint8 -> one (rows*(H+pad)-pad, cols*(W+pad)-pad, C) image."""
    b, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    grid = np.zeros((rows * (h + pad) - pad, cols * (w + pad) - pad, c), dtype=np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        grid[r * (h + pad):r * (h + pad) + h, k * (w + pad):k * (w + pad) + w] = img
    return grid


def save_image(arr: np.ndarray, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _pil(arr).save(path)


def png_bytes(arr: np.ndarray) -> bytes:
    """(H, W, C) uint8 -> the bytes of a PNG file."""
    buffer = io.BytesIO()
    _pil(arr).save(buffer, format="PNG")
    return buffer.getvalue()
