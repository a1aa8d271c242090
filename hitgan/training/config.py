"""Training options: one dataclass, validated at start-up, with the official recipe as defaults.

Official recipe (google-research/hit-gan run.py and README): Adam(beta1=0, beta2=0.99), batch
256, non-saturating loss, R1 cost 10 on the mean squared gradient norm every step, EMA 0.999 of
G from step 10; ImageNet 128: lr 1e-4, crop 0.875; FFHQ / CelebA-HQ 256 and 1024: lr 5e-5 and bCR
(cost 10, DiffAugment color,translation,cutout).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hitgan.data.dataset import CROP_MODES
from hitgan.models.config import (
    NORM_TYPES,
    PRESETS,
    DiscriminatorConfig,
    GeneratorConfig,
    get_preset,
)
from hitgan.training.distributed import init_device
from hitgan.training.losses import LOSSES
from hitgan.training.recipe import AUTO_BELOW, Choice, auto_recipe, describe_choices

PENALTIES = ("r1", "r1+r2", "wgan", "none")
PRECISIONS = ("fp32", "bf16", "fp16")
AUGMENTS = ("color", "translation", "cutout")
OUTPUT_INITS = ("official", "data")


@dataclass(frozen=True)
class TrainConfig:
    data: str = "mnist"  # image folder, .zip, or built-in "mnist"
    # class-conditional G and D over the dataset's labels (class sub-folders or dataset.json;
    # hitgan/data/labels.py); False = the official unconditional model
    cond: bool = False
    preset: str = "hit-tiny-32"
    norm: str | None = None  # override the generator norm: "syncbatch" for several processes
    out: str = "runs/hit-tiny-32"  # run directory: checkpoints, logs, samples
    steps: int = 1000
    max_minutes: float | None = None  # wall-clock budget: stop (with a checkpoint) after it
    batch: int = 32  # global batch (official: 256)
    batch_per_device: int | None = None  # micro-batch per process; None = batch / processes
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.99)
    # "rpgan": relativistic pairing loss softplus(D(fake) - D(real)) of R3GAN ("The GAN is
    # dead; long live the GAN!", NeurIPS 2024), with --penalty r1+r2 as there
    loss: str = "non-saturating"
    # "r1" on reals; "r1+r2": R1 on reals plus R2 on fakes, each at penalty_cost (R3GAN);
    # "wgan" (gradient penalty on interpolates); "none"
    penalty: str = "r1"
    penalty_cost: float = 10.0  # official: cost * mean over the batch of |grad|^2
    penalty_every: int = 1  # lazy regularisation: every k steps with cost * k (official: 1)
    bcr: bool = False  # balanced consistency regularisation
    bcr_cost: float = 10.0
    augment: str = "color,translation,cutout"  # DiffAugment policy for bCR / diffaug
    diffaug: bool = False  # DiffAugment every D input (small datasets)
    ema_decay: float = 0.999
    ema_start: int = 10  # copy G at this step, average after it (official)
    # EMA as a half-life in thousands of images (StyleGAN2-ADA's ema_kimg): the per-step decay
    # is 0.5 ** (batch / (1000 * ema_kimg)), replacing ema_decay; 0.999 at batch 256 is a
    # half-life of 177 kimg. None = ema_decay.
    ema_kimg: float | None = None
    # with ema_kimg: the half-life is at most ema_rampup x the images seen so far (ADA's ramp-up,
    # so early averages do not hold on to the first weights). None = no ramp-up.
    ema_rampup: float | None = None
    ema_buffers: str = "average"  # official: BatchNorm statistics averaged too; "copy"
    # batches to recompute G_ema's BatchNorm statistics with before samples and FID; 0 = use the
    # moving averages as the official code does (they lag behind in short runs)
    bn_recalibrate: int = 4
    crop: str = "center"
    crop_proportion: float = 1.0
    flip: bool = True
    precision: str = "fp32"
    # discriminator channels relative to the preset's (every layer, rounded; StyleGAN2-ADA's
    # cbase in spirit): 0.5 keeps a quarter of D's FLOPs. 1 = the preset (official) D.
    d_width: float = 1.0
    # StyleGAN's minibatch standard deviation channel in D (groups of 4; not official, which
    # has it off): D sees how alike the images of a group are, which counters mode collapse
    d_mbstd: bool = False
    # mode seeking (Mao et al. 2019, MSGAN): fakes come in pairs (rows 2i, 2i+1; the same class
    # in a conditional run) and G's loss adds this cost x mean over pairs of
    # 1 / (mean|G(z1) - G(z2)| / mean|z1 - z2| + 1e-5): it pays G for images that follow z.
    # 0 = off (official)
    mode_seeking: float = 0.0
    # "official": truncated-normal(0.02) output layers (the image starts grey, std ~0.05);
    # "data": then rescale/shift them once so the first images have the data's per-channel
    # mean and std (HiTGenerator.match_output_statistics)
    output_init: str = "official"
    compile: bool = False
    seed: int = 0
    deterministic: bool = False  # torch deterministic algorithms (bitwise resume on CPU)
    workers: int = 2
    strict_data: bool = False
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    eval_every: int = 0  # 0 = no periodic FID
    eval_samples: int = 5000
    nan_patience: int = 5  # stop after this many non-finite steps in a row
    resume: str | None = None  # "auto" or a checkpoint directory

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.preset not in PRESETS:
            raise ValueError(f"preset={self.preset!r}: choose one of {sorted(PRESETS)}")
        positive = ("steps", "batch", "penalty_every", "log_every", "sample_every",
                    "checkpoint_every", "keep_checkpoints", "eval_samples", "nan_patience")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes={self.max_minutes}: must be > 0")
        if self.batch_per_device is not None and self.batch_per_device < 1:
            raise ValueError(f"batch_per_device={self.batch_per_device}: must be >= 1")
        for name in ("workers", "eval_every", "ema_start", "bn_recalibrate"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 0")
        if self.norm is not None and self.norm not in NORM_TYPES:
            raise ValueError(f"norm={self.norm!r}: use one of {NORM_TYPES}")
        for name, value, allowed in (("loss", self.loss, LOSSES),
                                     ("penalty", self.penalty, PENALTIES),
                                     ("precision", self.precision, PRECISIONS),
                                     ("crop", self.crop, CROP_MODES),
                                     ("ema_buffers", self.ema_buffers, ("average", "copy")),
                                     ("output_init", self.output_init, OUTPUT_INITS)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}: use one of {allowed}")
        bad = [p for p in self.augment.split(",") if p not in AUGMENTS]
        if bad:
            raise ValueError(f"augment={self.augment!r}: unknown {bad}; use a comma list of "
                             f"{AUGMENTS}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay={self.ema_decay}: must be in [0, 1)")
        for name in ("ema_kimg", "ema_rampup"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name}={value}: must be > 0, or left unset")
        if self.penalty == "r1+r2" and self.precision == "fp16":
            raise ValueError("penalty='r1+r2' with precision='fp16': R2 is not loss-scaled; use "
                             "--precision bf16 or fp32")
        if not 0 < self.d_width <= 4:
            raise ValueError(f"d_width={self.d_width}: must be in (0, 4]; 1 is the preset's "
                             "discriminator, 0.5 halves its channels")
        if self.mode_seeking < 0:
            raise ValueError(f"mode_seeking={self.mode_seeking}: must be >= 0 (0 = off)")
        if self.lr_g <= 0 or self.lr_d <= 0:
            raise ValueError(f"lr_g={self.lr_g}, lr_d={self.lr_d}: learning rates must be > 0")

    @property
    def resolution(self) -> int:
        return PRESETS[self.preset].generator.resolution

    def generator_config(self) -> GeneratorConfig:
        g = get_preset(self.preset).generator
        return g if self.norm is None else dataclasses.replace(g, norm=self.norm)

    def discriminator_config(self) -> DiscriminatorConfig:
        d = get_preset(self.preset).discriminator
        if self.d_mbstd:
            d = dataclasses.replace(d, minibatch_stddev=True)
        if self.d_width == 1:
            return d
        channels = tuple(max(1, round(c * self.d_width)) for c in d.channel_table.values())
        return dataclasses.replace(d, channels=channels)

    def micro_batch(self, world: int) -> tuple[int, int]:
        """(per-process micro-batch, accumulation steps) for ``world`` processes."""
        per_device = self.batch_per_device or self.batch // world
        if per_device < 1 or self.batch % (per_device * world):
            raise ValueError(f"batch={self.batch}: must be a multiple of batch_per_device "
                             f"({per_device}) x processes ({world})")
        if self.mode_seeking and per_device % 2:
            raise ValueError(f"mode_seeking={self.mode_seeking} pairs the fakes of each micro-"
                             f"batch: make batch_per_device ({per_device}) even, or turn it off "
                             "with --mode-seeking 0")
        return per_device, self.batch // (per_device * world)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(names)}")
        return cls(**data)


# Official per-dataset settings, as keyword overrides (official README commands).
RECIPES: dict[str, dict[str, Any]] = {
    "imagenet128": {"preset": "hit-b-128", "batch": 256, "lr_g": 1e-4, "lr_d": 1e-4,
                    "crop": "random", "crop_proportion": 0.875, "steps": 1_000_000},
    "celebahq256": {"preset": "hit-b-256", "batch": 256, "lr_g": 5e-5, "lr_d": 5e-5,
                    "bcr": True, "crop": "fixed", "steps": 250_000},
    "ffhq256": {"preset": "hit-b-256", "batch": 256, "lr_g": 5e-5, "lr_d": 5e-5, "bcr": True,
                "crop": "fixed", "steps": 500_000},
    "ffhq1024": {"preset": "hit-b-1024", "batch": 256, "lr_g": 5e-5, "lr_d": 5e-5,
                 "bcr": True, "crop": "fixed", "steps": 500_000},
}

RECIPE_NAMES = ("auto", "official", *RECIPES)

# Per-preset defaults: the official lr by resolution (1e-4 at 128, 5e-5 at 256+), bCR at 256+.
# The CPU presets are ours, not official: runs of a few thousand steps need a shorter EMA.
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "hit-tiny-32": {"batch": 32, "lr_g": 2e-4, "lr_d": 2e-4, "ema_decay": 0.99},
    "hit-small-64": {"batch": 32, "lr_g": 1e-4, "lr_d": 1e-4, "ema_decay": 0.995},
    "hit-b-128": {"batch": 256, "lr_g": 1e-4, "lr_d": 1e-4},
    "hit-b-256": {"batch": 256, "lr_g": 5e-5, "lr_d": 5e-5, "bcr": True},
    "hit-b-1024": {"batch": 256, "lr_g": 5e-5, "lr_d": 5e-5, "bcr": True},
}


def build_config(overrides: dict[str, Any], config_file: str | None = None,
                 recipe: str | None = None, report: list[str] | None = None) -> TrainConfig:
    """Defaults < preset defaults < recipe < config file (JSON/YAML) < explicit options.

    ``recipe``: one of RECIPE_NAMES. None means "auto" for presets below 128 px and "official"
    otherwise. The auto recipe's choices, with their reasons, are appended to ``report``."""
    file_values = _read_config_file(Path(config_file)) if config_file is not None else {}
    if recipe is not None and recipe not in RECIPE_NAMES:
        raise ValueError(f"--recipe {recipe!r}: choose one of {RECIPE_NAMES}")
    recipe_values = dict(RECIPES.get(recipe or "", {}))
    preset = overrides.get("preset", file_values.get("preset",
                                                     recipe_values.get("preset",
                                                                       TrainConfig.preset)))
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r}: choose one of {sorted(PRESETS)}")
    choices: list[Choice] = []
    if recipe == "auto" or (recipe is None and PRESETS[preset].generator.resolution
                            < AUTO_BELOW):
        given = {**file_values, **overrides}
        choices = auto_recipe(preset, init_device(), cond=bool(given.get("cond", False)))
        recipe_values = {c.option: c.value for c in choices}
        if "ema_decay" in given and "ema_kimg" not in given:  # an explicit decay wins
            recipe_values.pop("ema_kimg", None)
            recipe_values.pop("ema_rampup", None)
    values = {**PRESET_DEFAULTS.get(preset, {}), **recipe_values, **file_values, **overrides}
    values.setdefault("out", f"runs/{preset}")
    cfg = TrainConfig.from_dict(values)
    if report is not None:
        report.extend(describe_choices(choices, cfg))
    return cfg


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"--config {path}: cannot read ({e.strerror})") from e
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:
            raise ValueError(f"--config {path}: YAML needs PyYAML (pip install pyyaml), or "
                             "use a .json file") from e
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--config {path}: invalid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: must hold a mapping of option names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}
