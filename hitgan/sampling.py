"""Sampling a generator: latents per seed, interpolation paths, the inference forward, and the
images, grids and videos of ``hitgan generate``.

Seed ``s`` gives ``torch.randn(latent_dim, generator=torch.Generator().manual_seed(s))``, so an
image depends on its seed only, whatever the batch. HiT has no mapping network, so truncation is
BigGAN's: every entry with ``|z| > threshold`` is redrawn (from the same seeded generator) until
none is left, which samples a normal truncated to [-threshold, threshold].

A class-conditional generator samples the same seeds in a row per class: image (k, s) has seed
s's latent and class k, so a column shows one latent across the classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hitgan.data.images import make_grid, save_image, to_uint8
from hitgan.models.layers import onednn_fp32_linear

INTERPOLATIONS = ("slerp", "lerp")
# Sampling runs in fp32 or in bf16 autocast. Training also has fp16 (TRAIN_PRECISIONS in
# hitgan/training/config.py), whose overflow needs the loss scaling of a training step; bf16
# keeps fp32's exponent range, so a forward alone never needs scaling.
INFERENCE_PRECISIONS = ("fp32", "bf16")


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds += range(int(lo), int(hi or lo) + 1)
    except ValueError as e:
        raise ValueError(f"--seeds {text!r}: use integers and ranges such as 0-63 or 1,5,9") from e
    if not seeds:
        raise ValueError(f"--seeds {text!r} selects no seed; use e.g. 0-15")
    return seeds


def parse_classes(text: str | None, num_classes: int, names: Sequence[str] = ()
                  ) -> list[int] | None:
    """``--class``: 'all', '3', '1,3', '0-4' (class numbers: positions in the sorted class
    names) or class names ('cat,dog') -> class numbers; None for an unconditional generator
    (which takes no --class)."""
    if not num_classes:
        if text is not None:
            raise ValueError(f"--class {text}: this generator is unconditional "
                             "(num_classes=0); leave --class out, or train with --cond")
        return None
    named = list(names) not in ([], [str(k) for k in range(num_classes)])
    every = f"0..{num_classes - 1}" + (f" or names {', '.join(names)}" if named else "")
    if text is None:
        raise ValueError(f"this generator is class-conditional ({num_classes} classes): pass "
                         f"--class K, a list such as 1,3, or all (classes {every})")
    if text == "all":
        return list(range(num_classes))
    classes = []
    for part in text.split(","):
        try:
            classes += parse_seeds(part)
        except ValueError:
            if part not in names:
                raise ValueError(f"--class {text!r}: {part!r} is no class; use {every}, "
                                 "comma lists, ranges such as 0-4, or all") from None
            classes.append(list(names).index(part))
    bad = [k for k in classes if not 0 <= k < num_classes]
    if bad:
        raise ValueError(f"--class {text!r}: class {bad[0]} is out of range; use {every}")
    return classes


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




def inference_fn(generator: torch.nn.Module, precision: str = "fp32", compile: bool = False,
                 device: torch.device | None = None) -> Callable[..., torch.Tensor]:
    """An eval-mode forward of ``generator`` (z, and labels for a conditional one), optionally
    in bf16 autocast and/or compiled. With ``device`` (where ``generator`` already is), inputs
    are moved there first, so latents made on the CPU can be passed as they are. Eager fp32 on
    the CPU runs its Linear layers through oneDNN (``onednn_fp32_linear``): the same images,
    faster than torch's default on every CPU measured (docs/performance.md).

    ``compile`` uses torch.compile with inductor's weight freezing (constant-folded, prepacked
    weights; valid because sampling never changes them). Freezing is switched on around each
    call of the compiled forward, when inductor reads it, and off again after: nothing else in
    the process is compiled with it. On the 2-vCPU machine of docs/performance.md compile + bf16
    was about 4x eager fp32 at 128 px; outputs differ from fp32 by about 1e-2 at most on a
    trained-scale model, about one level of an 8-bit image. Call it under
    ``torch.inference_mode()``.
    """
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"--precision {precision}: use one of {INFERENCE_PRECISIONS}")
    generator.eval()
    fn: Callable[..., torch.Tensor] = generator
    if compile:
        import torch._inductor.config as inductor_config

        compiled = torch.compile(generator)

        def frozen(z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
            with inductor_config.patch(freezing=True):  # read when a call (re)compiles
                return compiled(z, labels)

        fn = frozen
    if precision == "fp32" and not compile:
        eager = fn

        def fp32(z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
            with onednn_fp32_linear():  # a no-op off the CPU
                return eager(z, labels)

        fn = fp32
    if precision == "bf16":
        full = fn

        def bf16(z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
            with torch.autocast(z.device.type, dtype=torch.bfloat16):
                return full(z, labels).float()

        fn = bf16
    if device is not None:
        there = fn

        def moved(z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
            return there(z.to(device), None if labels is None else labels.to(device))

        fn = moved
    return fn


def render(forward: Callable[..., torch.Tensor], z: torch.Tensor, batch: int,
           labels: torch.Tensor | None = None) -> np.ndarray:
    """Latents (N, D) and, for a conditional generator, labels (N,) -> (N, H, W, C) uint8
    images, ``batch`` at a time."""
    with torch.inference_mode():
        return np.concatenate([
            to_uint8(forward(z[i:i + batch], None if labels is None else labels[i:i + batch]))
            for i in range(0, len(z), batch)])


def write_samples(forward: Callable[..., torch.Tensor], out: Path, seeds: Sequence[int],
                  classes: Sequence[int] | None, latent_dim: int, trunc: float | None = None,
                  batch: int = 16, grid: int = 64) -> int:
    """The images of ``seeds`` as PNGs under ``out`` and ``out/grid.png``; returns how many.

    Unconditional (``classes`` None): ``seedNNNN.png``, and a square grid of the first ``grid``
    seeds. Conditional: ``classKKK-seedNNNN.png`` for every class and seed, and a grid with a
    row per class and a column per seed (the first ``grid`` seeds)."""
    z = seed_latents(seeds, latent_dim, trunc)  # (S, D)
    if classes is None:
        images = render(forward, z, batch)  # (S, H, W, C)
        for seed, img in zip(seeds, images, strict=True):
            save_image(img, out / f"seed{seed:04d}.png")
        save_image(make_grid(images[:grid]), out / "grid.png")
        return len(images)
    labels = torch.tensor(classes).repeat_interleave(len(seeds))  # (K * S,): class-major
    images = render(forward, z.repeat(len(classes), 1), batch, labels)  # (K * S, H, W, C)
    for i, img in enumerate(images):
        k, seed = classes[i // len(seeds)], seeds[i % len(seeds)]
        save_image(img, out / f"class{k:03d}-seed{seed:04d}.png")
    cols = min(len(seeds), grid)
    rows = images.reshape(len(classes), len(seeds), *images.shape[1:])[:, :cols]  # (K, cols, ...)
    save_image(make_grid(rows.reshape(-1, *images.shape[1:]), cols), out / "grid.png")
    return len(images)


def interpolation_frames(forward: Callable[..., torch.Tensor], keys: Sequence[int],
                         classes: Sequence[int] | None, latent_dim: int,
                         trunc: float | None = None, frames: int = 30, method: str = "slerp",
                         batch: int = 16) -> np.ndarray:
    """(T, H, W, C) uint8 frames along the path through the latents of the seeds ``keys``
    (``interpolation_path``); a conditional generator keeps the one class of ``classes``."""
    path = interpolation_path(seed_latents(keys, latent_dim, trunc), frames, method)  # (T, D)
    if classes is not None and len(classes) != 1:
        raise ValueError(f"--interpolate with --class {','.join(map(str, classes))}: an "
                         "interpolation keeps one class; give --class K")
    labels = None if classes is None else torch.full((len(path),), classes[0])  # (T,)
    return render(forward, path, batch, labels)


def write_interpolation(frames: np.ndarray, out: Path, video: str = "gif", fps: float = 15
                        ) -> Path:
    """``frames`` (T, H, W, C) as ``out/frames/frameNNNN.png`` and the video
    ``out/interpolation.{video}`` (gif or mp4); returns the video's path."""
    for i, img in enumerate(frames):
        save_image(img, out / "frames" / f"frame{i:04d}.png")
    path = out / f"interpolation.{video}"
    save_animation(frames, path, fps)
    return path
