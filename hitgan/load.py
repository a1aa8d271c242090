"""The generator a sampling command (``generate``, ``serve``, ``export``, ``eval``) starts from:
weights from ``save_pretrained``, a training checkpoint or run directory (its G_ema), or a
random initialisation of a preset.

It reads training checkpoints, so it sits above hitgan/training/, beside the CLI; the sampling
code it feeds (hitgan/sampling.py, hitgan/metrics/) needs only a generator.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hitgan.models.config import get_preset
from hitgan.models.generator import HiTGenerator
from hitgan.models.io import from_pretrained


def load_generator(model: str, bn_recalibrate: int = 4) -> HiTGenerator:
    """The generator in the directory ``model``: a ``save_pretrained`` generator, or a training
    checkpoint or run (its newest valid checkpoint), whose G_ema gets its BatchNorm statistics
    recomputed over ``bn_recalibrate`` random batches first (0 keeps the moving averages)."""
    path = Path(model)
    if not path.is_dir():
        raise ValueError(f"--model {model}: no such directory")
    if not (path / "config.json").exists() or (path / "checkpoints").is_dir():
        from hitgan.training.checkpoint import load_generator as load_checkpoint

        generator = load_checkpoint(model)
        if bn_recalibrate:
            generator.recalibrate_batchnorm(bn_recalibrate)
        return generator
    generator = from_pretrained(model)
    if not isinstance(generator, HiTGenerator):
        raise ValueError(f"--model {model}: holds a {type(generator).__name__}, not a "
                         "generator")
    return generator


def random_generator(preset: str, seed: int = 0) -> HiTGenerator:
    """A randomly initialised generator of ``preset``; the same ``seed``, the same weights."""
    torch.manual_seed(seed)
    return HiTGenerator(get_preset(preset).generator)
