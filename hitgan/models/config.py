"""Typed configurations of the HiT generator and the StyleGAN2 discriminator, and the presets.

Every check raises ``ValueError`` naming the field, its value and a fix; nothing is silently
corrected. Configs are frozen dataclasses that round-trip through JSON (``to_dict``/``from_dict``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

ATTENTION_TYPES = ("multi_query", "multi_head")
NORM_TYPES = ("batch", "layer", "syncbatch")
UPSAMPLE_TYPES = ("pixel_shuffle", "bilinear")


def _fail(name: str, value: Any, fix: str) -> None:
    raise ValueError(f"{name}={value!r}: {fix}")


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        _fail(name, value, "must be a positive integer")


@dataclass(frozen=True)
class GeneratorConfig:
    """HiT generator. Stage ``i`` works on a grid of ``initial_size * 2**i`` pixels a side."""

    resolution: int = 128  # output size; must equal initial_size * 2**(stages - 1)
    latent_dim: int = 256  # size of z
    layers: tuple[int, ...] = (2, 2, 2, 2, 2)  # blocks per stage after its cross-attention block
    widths: tuple[int, ...] = (512, 512, 256, 128, 128)  # channels per stage
    heads: tuple[int, ...] = (16, 8, 4, 4, 4)  # attention heads per stage
    # patch side per stage for multi-axis attention; None = MLP-only stage (no self-attention)
    patch_sizes: tuple[int | None, ...] = (4, 4, 8, 8, None)
    attention: str = "multi_query"  # "multi_query": one K/V head shared by all heads; "multi_head"
    norm: str = "batch"  # "batch" (official), "layer", or "syncbatch" for distributed training
    # between stages: "pixel_shuffle" (official: depth_to_space, each of a token's 4 channel
    # groups becomes one pixel of its 2x2 block, independent at init) or "bilinear" (every
    # channel interpolated, then a Linear): neighbouring pixels start alike
    upsample: str = "pixel_shuffle"
    out_channels: int = 3
    initial_size: int = 8  # z -> Linear -> initial_size x initial_size token grid
    latent_tokens: int = 16  # z -> Linear -> this many tokens, keys/values of cross-attention
    mlp_ratio: int = 4  # hidden width of every MLP block, as a multiple of the stage width
    # class-conditional with this many classes (a learned class embedding joins z); 0 = the
    # unconditional official model, unchanged
    num_classes: int = 0
    class_names: tuple[str, ...] = ()  # optional, one per class: what the labels mean

    def __post_init__(self) -> None:
        for name in ("layers", "widths", "heads", "patch_sizes", "class_names"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _check_classes(self.num_classes, self.class_names)
        for name in ("resolution", "latent_dim", "out_channels", "initial_size",
                     "latent_tokens", "mlp_ratio"):
            _check_positive(name, getattr(self, name))
        n = len(self.widths)
        if n == 0:
            _fail("widths", self.widths, "give at least one stage")
        for name in ("layers", "heads", "patch_sizes"):
            if len(getattr(self, name)) != n:
                _fail(name, getattr(self, name),
                      f"give one entry per stage ({n} stages, as in widths={self.widths})")
        for i in range(n):
            if not isinstance(self.layers[i], int) or self.layers[i] < 0:
                _fail(f"layers[{i}]", self.layers[i], "must be an integer >= 0")
            _check_positive(f"widths[{i}]", self.widths[i])
            _check_positive(f"heads[{i}]", self.heads[i])
            if self.widths[i] % self.heads[i]:
                _fail(f"heads[{i}]", self.heads[i],
                      f"must divide widths[{i}]={self.widths[i]}; pick a divisor of it")
            if i < n - 1 and self.upsample == "pixel_shuffle" and self.widths[i] % 4:
                _fail(f"widths[{i}]", self.widths[i],
                      "must be a multiple of 4: pixel shuffle turns 4 channels into a 2x2 block")
        if self.attention not in ATTENTION_TYPES:
            _fail("attention", self.attention, f"use one of {ATTENTION_TYPES}")
        if self.norm not in NORM_TYPES:
            _fail("norm", self.norm, f"use one of {NORM_TYPES}")
        if self.upsample not in UPSAMPLE_TYPES:
            _fail("upsample", self.upsample, f"use one of {UPSAMPLE_TYPES}")
        expected = self.initial_size * 2 ** (n - 1)
        if self.resolution != expected:
            _fail("resolution", self.resolution,
                  f"unsupported: {n} stages from an {self.initial_size}x{self.initial_size} grid "
                  f"output {expected}px; set resolution={expected}, or give the number of "
                  "stages for which initial_size * 2**(stages - 1) equals the resolution")
        self._check_patches()

    def _check_patches(self) -> None:
        mlp_from = None
        for i, (p, size) in enumerate(zip(self.patch_sizes, self.grid_sizes, strict=True)):
            if p is None:
                if mlp_from is None:
                    mlp_from = i
                continue
            if mlp_from is not None:
                _fail(f"patch_sizes[{i}]", p,
                      f"attention stages must come before MLP-only stages (stage {mlp_from} is "
                      "MLP-only); set it to None or reorder")
            _check_positive(f"patch_sizes[{i}]", p)
            if size % p:
                _fail(f"patch_sizes[{i}]", p,
                      f"must divide the stage grid ({size}x{size}); use a divisor such as "
                      f"{max(d for d in (1, 2, 4, 8, 16) if size % d == 0)}")
            if self.heads[i] % 2:
                _fail(f"heads[{i}]", self.heads[i],
                      "must be even in a multi-axis attention stage (half the heads attend "
                      "locally, half dilated); use an even number")
        if mlp_from is None:
            _fail("patch_sizes", self.patch_sizes,
                  "the last stage must be MLP-only (None): SkipToRGB reads MLP-only stages")

    @property
    def grid_sizes(self) -> tuple[int, ...]:
        return tuple(self.initial_size * 2**i for i in range(len(self.widths)))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        return cls(**_known_fields(cls, data))


def _check_classes(num_classes: int, class_names: tuple[str, ...]) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        _fail("num_classes", num_classes, "must be an integer >= 0 (0: unconditional)")
    if num_classes == 1:
        _fail("num_classes", num_classes, "one class is no condition; use 0 (unconditional) "
              "or label the data with two or more classes")
    if class_names and len(class_names) != num_classes:
        _fail("class_names", class_names, f"give one name per class ({num_classes}), or none")
    if not all(isinstance(c, str) for c in class_names):
        _fail("class_names", class_names, "must be strings")


# The official channel table of StyleGANDiscriminator: channels at each resolution.
def official_channels(resolution: int, multiplier: int) -> int:
    return 512 if resolution <= 32 else 16384 * multiplier // resolution


@dataclass(frozen=True)
class DiscriminatorConfig:
    """StyleGAN2 residual discriminator as in the official HiT-GAN code."""

    resolution: int = 128  # input size, a power of two from 8 to 1024
    channel_multiplier: int = 1  # official: 1 at 128px, 2 at 256px and above
    # channels from `resolution` down to 4x4 (one per power of two); None = official table
    channels: tuple[int, ...] | None = None
    blur_resample: bool = True  # [1,3,3,1] blur before stride-2 subsampling; False = avg pool
    equalized_lr: bool = False  # StyleGAN2 equalized learning rate for convs and denses
    minibatch_stddev: bool = False  # append the minibatch standard deviation channel
    stddev_group: int = 4
    in_channels: int = 3
    # class-conditional: a projection discriminator over this many classes; 0 = unconditional
    num_classes: int = 0

    def __post_init__(self) -> None:
        if self.channels is not None:
            object.__setattr__(self, "channels", tuple(self.channels))
        _check_classes(self.num_classes, ())
        for name in ("resolution", "channel_multiplier", "stddev_group", "in_channels"):
            _check_positive(name, getattr(self, name))
        r = self.resolution
        if r < 8 or r > 1024 or r & (r - 1):
            _fail("resolution", r, "unsupported; use a power of two from 8 to 1024")
        if self.channels is not None:
            n = int(math.log2(r)) - 1
            if len(self.channels) != n:
                _fail("channels", self.channels,
                      f"give {n} entries, for resolutions {r} down to 4, or None for the "
                      "official table")
            for i, c in enumerate(self.channels):
                _check_positive(f"channels[{i}]", c)

    @property
    def channel_table(self) -> dict[int, int]:
        """Channels at each resolution, from the input size down to 4."""
        sizes = [self.resolution // 2**i for i in range(int(math.log2(self.resolution)) - 1)]
        if self.channels is not None:
            return dict(zip(sizes, self.channels, strict=True))
        return {s: official_channels(s, self.channel_multiplier) for s in sizes}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = None if self.channels is None else list(self.channels)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiscriminatorConfig:
        return cls(**_known_fields(cls, data))


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(names)}")
    return dict(data)


@dataclass(frozen=True)
class Preset:
    generator: GeneratorConfig
    discriminator: DiscriminatorConfig
    note: str = ""


PRESETS: dict[str, Preset] = {
    # The official layouts (models/generators.py, `if output_size == ...`).
    "hit-b-128": Preset(
        GeneratorConfig(resolution=128, latent_dim=256),
        DiscriminatorConfig(resolution=128, channel_multiplier=1),
        "official ImageNet 128 layout"),
    "hit-b-256": Preset(
        GeneratorConfig(resolution=256, latent_dim=512, layers=(2, 2, 2, 2, 1, 1),
                        widths=(512, 512, 256, 128, 64, 64), heads=(16, 8, 4, 4, 4, 4),
                        patch_sizes=(4, 4, 8, 8, None, None)),
        DiscriminatorConfig(resolution=256, channel_multiplier=2),
        "official FFHQ / CelebA-HQ 256 layout"),
    "hit-b-1024": Preset(
        GeneratorConfig(resolution=1024, latent_dim=512, layers=(2, 2, 2, 2, 1, 1, 1, 1),
                        widths=(512, 512, 256, 128, 64, 64, 32, 32),
                        heads=(16, 8, 4, 4, 4, 4, 4, 4),
                        patch_sizes=(4, 4, 8, 8, None, None, None, None)),
        DiscriminatorConfig(resolution=1024, channel_multiplier=2),
        "official FFHQ 1024 layout"),
    # Small layouts for CPU work, by the same rules: multi-axis attention at low resolution,
    # MLP-only stages at the top, widths shrinking as the grid grows.
    "hit-tiny-32": Preset(
        GeneratorConfig(resolution=32, latent_dim=64, layers=(1, 1, 1), widths=(128, 64, 32),
                        heads=(4, 4, 2), patch_sizes=(4, 4, None)),
        DiscriminatorConfig(resolution=32, channels=(64, 128, 256, 256)),
        "CPU-sized, for 32px data such as padded MNIST"),
    "hit-small-64": Preset(
        GeneratorConfig(resolution=64, latent_dim=128, layers=(2, 2, 2, 1),
                        widths=(256, 256, 128, 64), heads=(8, 4, 4, 4),
                        patch_sizes=(4, 4, 8, None)),
        DiscriminatorConfig(resolution=64, channels=(64, 128, 256, 256, 256)),
        "CPU-sized 64px model"),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"preset={name!r} is unknown; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
