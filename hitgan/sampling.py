"""Latents for sampling: per-seed normal or truncated-normal vectors, and interpolation paths.

Seed ``s`` gives ``torch.randn(latent_dim, generator=torch.Generator().manual_seed(s))``, so an
image depends on its seed only, whatever the batch. HiT has no mapping network, so truncation is
BigGAN's: every entry with ``|z| > threshold`` is redrawn (from the same seeded generator) until
none is left, which samples a normal truncated to [-threshold, threshold].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

INTERPOLATIONS = ("slerp", "lerp")


def seed_latent(seed: int, dim: int, trunc: float | None = None) -> torch.Tensor:
    """(dim,) latent of one seed; with ``trunc``, entries beyond it are redrawn."""
    if trunc is not None and trunc <= 0:
        raise ValueError(f"--trunc {trunc}: the truncation threshold must be > 0 (e.g. 0.7); "
                         "leave it out for untruncated latents")
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(dim, generator=gen)
    if trunc is not None:
        while (outside := z.abs() > trunc).any():
            z[outside] = torch.randn(int(outside.sum()), generator=gen)
    return z


def seed_latents(seeds: Sequence[int], dim: int, trunc: float | None = None) -> torch.Tensor:
    """(len(seeds), dim) latents, one row per seed."""
    return torch.stack([seed_latent(s, dim, trunc) for s in seeds])


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of (D,) vectors at times (T,) -> (T, D), lerp if (anti)parallel.

    ``(sin((1 - t) w) a + sin(t w) b) / sin(w)``, w the angle between ``a`` and ``b``: unlike
    lerp it does not shrink the middle frames' norm below that of typical Gaussian latents."""
    cos = torch.dot(a, b) / (a.norm() * b.norm())
    omega = torch.arccos(cos.clamp(-1, 1))
    if omega.sin().abs() < 1e-6:
        return lerp(a, b, t)
    t = t[:, None]
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / omega.sin()


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of (D,) vectors at times (T,) -> (T, D)."""
    t = t[:, None]
    return (1 - t) * a + t * b


def interpolation_path(keys: torch.Tensor, frames: int, method: str = "slerp") -> torch.Tensor:
    """Latents (K, D) -> a path through them (1 + (K - 1) * (frames - 1), D).

    Each of the K - 1 segments has ``frames`` frames including both of its keys; a key shared by
    two segments appears once."""
    if method not in INTERPOLATIONS:
        raise ValueError(f"--interp {method!r}: use one of {INTERPOLATIONS}")
    if len(keys) < 2:
        raise ValueError(f"--interpolate: give at least two seeds, got {len(keys)}")
    if frames < 2:
        raise ValueError(f"--frames {frames}: need at least 2 frames per segment")
    step = slerp if method == "slerp" else lerp
    t = torch.linspace(0, 1, frames)
    parts = [step(keys[i], keys[i + 1], t)[(1 if i else 0):] for i in range(len(keys) - 1)]
    return torch.cat(parts)


def save_animation(frames: np.ndarray, path: Path, fps: float) -> None:
    """(T, H, W, C) uint8 -> ``path``: a looping GIF by Pillow, or an MP4 by imageio."""
    if path.suffix == ".gif":
        images = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:],
                       duration=round(1000 / fps), loop=0)
        return
    try:
        import imageio.v3 as iio
    except ImportError as e:
        raise ImportError("MP4 video needs imageio with an ffmpeg plugin: pip install "
                          "'hitgan[video]' (imageio, imageio-ffmpeg); or write a GIF") from e
    iio.imwrite(path, frames, fps=fps)


PRECISIONS = ("fp32", "bf16")


def inference_fn(generator: torch.nn.Module, precision: str = "fp32", compile: bool = False
                 ) -> Callable[..., torch.Tensor]:
    """An eval-mode forward of ``generator`` (z, and labels for a conditional one), optionally
    in bf16 autocast and/or compiled.

    ``compile`` uses torch.compile with inductor's weight freezing (constant-folded, prepacked
    weights; valid because sampling never changes them). On the 2-vCPU machine of
    docs/performance.md compile + bf16 was about 4x eager fp32 at 128 px; outputs differ from
    fp32 by about 1e-2 at most on a trained-scale model, about one level of an 8-bit image.
    Call it under ``torch.inference_mode()``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision}: use one of {PRECISIONS}")
    generator.eval()
    fn: Callable[..., torch.Tensor] = generator
    if compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        fn = torch.compile(generator)
    if precision == "fp32":
        return fn

    def bf16(z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(z.device.type, dtype=torch.bfloat16):
            return fn(z, labels).float()

    return bf16
