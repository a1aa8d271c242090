"""The ``auto`` recipe: training settings chosen from the run, as StyleGAN2-ADA's ``--cfg auto``.

For presets below 128 px (the CPU-sized ones) ``hitgan train`` uses it unless ``--recipe`` names
another; ``--recipe official`` keeps the official objective (R1 cost 10 every step, fp32, the
preset's discriminator) and the hit-b presets always default to it. Each choice comes with the
measurement behind it: the recipe runs in docs/training.md ("Small budgets: the auto recipe"),
made with ``python -m bench.quality.compare``. Explicit options and ``--config`` files override
any choice. ``data_choices`` reads the training images: their channels for every recipe, and
for the auto recipe their number (adaptive augmentation below ``SMALL_SET`` images).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hitgan.data.dataset import ImageDataset, Preprocess
from hitgan.models.config import get_preset
from hitgan.runtime import fast_bf16

AUTO_BELOW = 128  # px: presets below this resolution get the auto recipe by default


@dataclass(frozen=True)
class Choice:
    option: str
    value: Any
    reason: str
    by: str = "auto"  # who chose: "auto" (the recipe) or "data" (read off the images)


SMALL_SET = 5000  # images: the auto recipe augments adaptively below this


def data_choices(source: str, resolution: int, channels: bool = True,
                 size: bool = False) -> list[Choice]:
    """What a recipe reads off the training images. ``channels`` (every recipe, unless given):
    a grey data set (every image of mode L or 1, or R = G = B) trains a one-channel G and D,
    whose samples are grey; in RGB, G spends capacity on three equal channels and its samples
    carry colour tints the data never had. ``size`` (the auto recipe): how many images there
    are, which decides adaptive augmentation."""
    data = ImageDataset(source, Preprocess(resolution), progress=False)
    n, found = len(data), []
    if channels and data.channels_found() == 1:
        found.append(Choice("channels", 1, f"{data.name}: all {n:,} images are grey "
                            "(R = G = B): a one-channel G and D, grey samples", "data"))
    elif channels:
        found.append(Choice("channels", 3, f"{data.name}: colour images: RGB", "data"))
    if size and n < SMALL_SET:
        found.append(Choice(
            "ada_target", 0.6,
            f"{data.name}: {n:,} images, fewer than {SMALL_SET:,}: StyleGAN2-ADA's adaptive "
            "augmentation, which augments D's inputs only as often as D calls its training "
            "images real too surely (p starts at 0): after 15 CPU-minutes, two seeds, FID-2k "
            "178.5 and 165.3 against 193.3 and 175.7 without it on 100 colour photo crops, "
            "even on 300 digits (26.3, 26.1 against 26.7, 26.1) and 2,000 crops (161.8, 162.3 "
            "against 161.6, 159.9); for long runs, where D overfits small sets "
            "(docs/training.md)", "data"))
    elif size:
        found.append(Choice(
            "ada_target", None,
            f"{data.name}: {n:,} images: no augmentation (the quality suite's sets, "
            f"{SMALL_SET:,} to 60,000 images, beat the baseline without it)", "data"))
    return found


def auto_recipe(preset: str, device: torch.device) -> list[Choice]:
    """The auto recipe's choices for ``preset`` on ``device``. They were checked on several
    data sets (``python -m bench.quality``), grey and colour, 5,000 to 60,000 images; what it
    reads off the images themselves is in ``data_choices``."""
    resolution = get_preset(preset).generator.resolution
    if resolution >= AUTO_BELOW:
        return []
    bf16, found = fast_bf16(device)
    return [
        Choice("precision", "bf16" if bf16 else "fp32",
               f"{found}: " + ("bf16 autocast with fp32 master weights: with this recipe at "
                               "hit-tiny-32, 1.06x fp32 steps/s on an AMX Xeon and 1.10x on an "
                               "AVX-512 EPYC (one thread each; docs/training.md)" if bf16 else
                               "bf16 would be emulated (0.06x fp32 steps/s measured on an AVX2 "
                               "EPYC)")),
        Choice("penalty_every", 16,
               "lazy R1 (StyleGAN2): every 16 steps at 16x the cost, the same penalty on "
               "average for a fraction of the double backward: on colour photo crops R1 every "
               "step scored FID-1k 200.7 and 195.2 against 200.3 and 183.9 over two seeds "
               "after 6 CPU-minutes (docs/training.md)"),
        Choice("d_width", 0.5,
               "half the discriminator's channels (a quarter of its FLOPs, the step's main "
               "cost): with mode seeking, FID-2k 77.7 at 39 img/s against 87.6 at 52 img/s with "
               "a quarter width, after 10 CPU-minutes on 60,000 distorted digits; the full "
               "width ran at 17 img/s (docs/training.md)"),
        Choice("batch", 16,
               "more, smaller steps: FID-1k 292 against 330 at batch 32 after 3 minutes "
               "(half-width D; docs/training.md)"),
        Choice("norm", "layer",
               "LayerNorm in G instead of BatchNorm: FID-1k 88.2 against 170.1 after 10 "
               "CPU-minutes on the digits, where BatchNorm's samples at batch 16 collapsed to "
               "a few shapes; on colour photo crops 206.0 against 192.1 (FID-1k, mean of two "
               "seeds, 6 CPU-minutes; docs/training.md)"),
        Choice("upsample", "bilinear",
               "bilinear upsampling between G's stages instead of pixel shuffle, whose 2x2 "
               "blocks start as unrelated channel groups: on 30,000 colour photo crops FID-2k "
               "180.2 and 173.7 against 273.9 and 264.7 (blocky mosaics) after 10 CPU-minutes, "
               "below the DCGAN baseline's 219.3 and 256.3; on digits about even: 77.4 and "
               "87.9 against 77.7 and 79.2 on 60,000 distorted ones, 87.6 against 85.4 on the "
               "built-in 5,000 (docs/training.md)"),
        Choice("output_init", "data",
               "the first images have the data's per-channel mean and std instead of grey "
               "(std 0.05): FID-500 142 against 217 after 6 CPU-minutes (docs/training.md)"),
        Choice("ema_kimg", 5,
               "sample from an EMA of G with a half-life of 5k images (StyleGAN2-ADA's rule "
               "at batch 16): FID-2k 44.7 against G's own 59.4 after 20 CPU-minutes on the "
               "digits, in the same run (docs/training.md)"),
        Choice("ema_rampup", 0.05,
               "the half-life is at most 5% of the images seen so far (ADA's ramp-up), so "
               "the average does not lag in the first minutes"),
        Choice("mode_seeking", 0.03,
               "MSGAN's term on pairs of fakes, paying G for images that differ as their "
               "latents do: without it G collapsed (on 60,000 distorted digits one of two seeds "
               "made a single shape; conditional runs made one image per class); with it "
               "FID-2k 77.7 and 79.2 against 114.8 and 209.9 after 10 CPU-minutes "
               "(docs/training.md)"),
    ]


def describe_choices(choices: list[Choice], config: Any) -> list[str]:
    """One line per choice, and where a flag or config file replaced it."""
    lines = []
    for c in choices:
        final = getattr(config, c.option)
        note = "" if final == c.value else f" [overridden: {c.option}={final}]"
        lines.append(f"{c.by}: {c.option}={c.value}: {c.reason}{note}")
    return lines
