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
from typing import Any, TypeVar

from hitgan.data.dataset import CROP_MODES
from hitgan.distributed import local_device
from hitgan.models.config import (
    NORM_TYPES,
    PRESETS,
    UPSAMPLE_TYPES,
    DiscriminatorConfig,
    GeneratorConfig,
    get_preset,
)
from hitgan.training.losses import LOSSES
from hitgan.training.recipe import (
    AUTO_BELOW,
    Choice,
    auto_recipe,
    data_choices,
    describe_choices,
)

PENALTIES = ("r1", "r1+r2", "wgan", "none")
# A training step runs in fp32 or in autocast: bf16, or fp16 with loss scaling against fp16's
# narrow range. Sampling's list (INFERENCE_PRECISIONS, hitgan/sampling.py) has no fp16: bf16
# keeps fp32's range and needs no scaling, so it alone is offered there.
TRAIN_PRECISIONS = ("fp32", "bf16", "fp16")
AUGMENTS = ("color", "translation", "cutout")
OUTPUT_INITS = ("official", "data")
EMA_BUFFERS = ("average", "copy")

T = TypeVar("T")


def _option(default: T, help: str, *, choices: tuple[Any, ...] = (),
            metavar: tuple[str, ...] | None = None) -> T:
    """A TrainConfig field: its default, one sentence for ``hitgan train --help`` with the unit
    and the official value, and the values it allows (checked at construction; the CLI's
    choices). ``metavar``: the CLI's names of a tuple's values."""
    return dataclasses.field(default=default,
                             metadata={"help": help, "choices": choices, "metavar": metavar})


@dataclass(frozen=True)
class TrainConfig:
    """Every option of ``hitgan train`` (a flag each, ``--lr-g`` for ``lr_g``). The help of each
    field says what it means, in what unit, and what the official code uses."""

    data: str = _option(
        "mnist", "Training images: an image folder, a .zip from `hitgan dataset`, or the "
        "built-in 'mnist' (official runs: ImageNet at 128 px, CelebA-HQ and FFHQ; see --recipe).")
    cond: bool = _option(
        False, "Class-conditional G and D over the dataset's labels (class sub-folders or "
        "dataset.json; hitgan/data/labels.py); official: off, an unconditional model.")
    preset: str = _option(
        "hit-tiny-32", "Layout of G and D (`hitgan info` lists their costs); the official models "
        "are hit-b-128, hit-b-256 and hit-b-1024, the smaller presets are ours, for CPUs.",
        choices=tuple(sorted(PRESETS)))
    norm: str | None = _option(
        None, "Replaces the preset's generator normalisation: 'syncbatch' shares BatchNorm "
        "statistics across torchrun processes, 'layer' is LayerNorm; unset keeps the preset's "
        "(official: batch).", choices=NORM_TYPES)
    upsample: str | None = _option(
        None, "Replaces the preset's upsampling between generator stages: 'bilinear' "
        "interpolates every channel, then a Linear, so neighbouring pixels start alike; unset "
        "keeps the preset's (official: pixel_shuffle, depth_to_space).",
        choices=UPSAMPLE_TYPES)
    out: str = _option(
        "runs/hit-tiny-32", "Run directory for checkpoints, logs, samples and config.json; "
        "unset: runs/PRESET.")
    steps: int = _option(
        1000, "Training steps of one global batch each (official: 1,000,000 on ImageNet, "
        "250,000 to 500,000 on faces).")
    max_minutes: float | None = _option(
        None, "Wall-clock budget in minutes: the run stops with a checkpoint when it is spent or "
        "after --steps, whichever comes first; unset: no budget (official).")
    batch: int = _option(
        32, "Global batch in images per step, over all processes and accumulation steps "
        "(official: 256).")
    batch_per_device: int | None = _option(
        None, "Micro-batch in images per process and forward; below batch / processes the "
        "gradients of several are accumulated; unset: batch / processes (official).")
    lr_g: float = _option(
        1e-4, "Adam learning rate of G (official: 1e-4 at 128 px, 5e-5 at 256 px and up; the "
        "preset sets it).")
    lr_d: float = _option(
        1e-4, "Adam learning rate of D (official: as --lr-g; the preset sets it).")
    betas: tuple[float, float] = _option(
        (0.0, 0.99), "Adam's beta1 and beta2 for G and D (official: 0 0.99).",
        metavar=("B1", "B2"))
    loss: str = _option(
        "non-saturating", "Adversarial loss: 'non-saturating' (official), 'hinge' (also in the "
        "official code), or 'rpgan', the relativistic pairing loss softplus(D(fake) - D(real)) of "
        "R3GAN ('The GAN is dead; long live the GAN!', NeurIPS 2024), used there with "
        "--penalty r1+r2.", choices=LOSSES)
    penalty: str = _option(
        "r1", "Gradient penalty of D: 'r1' on reals (official), 'r1+r2' R1 on reals plus R2 on "
        "fakes, each at --penalty-cost (R3GAN), 'wgan' (WGAN-GP on interpolates), or 'none'.",
        choices=PENALTIES)
    penalty_cost: float = _option(
        10.0, "Weight of the penalty: cost x the batch mean of |grad D|^2, with no 1/2 factor "
        "(official: 10).")
    penalty_every: int = _option(
        1, "Lazy regularisation: the penalty every k steps at k x the cost (StyleGAN2), k in "
        "steps (official: 1, every step).")
    bcr: bool = _option(
        False, "Balanced consistency regularisation: D also scores stop-gradient DiffAugmented "
        "copies of reals and fakes and pays for scoring them differently (official: on for the "
        "256 px and larger presets, which set it).")
    bcr_cost: float = _option(
        10.0, "Weight of bCR: cost x (mse(D(x), D(aug x)) on reals + on fakes) (official: 10).")
    augment: str = _option(
        "color,translation,cutout", "DiffAugment policy of bCR and --diffaug: a comma list of "
        f"{', '.join(AUGMENTS)} (official: all three).")
    diffaug: bool = _option(
        False, "DiffAugment every input of D, reals and fakes, for small datasets; not official "
        "(off).")
    ada_target: float | None = _option(
        None, "Adaptive augmentation (StyleGAN2-ADA): each input of D, real or fake, is "
        "DiffAugmented (--augment) with a probability p that starts at 0 and rises while "
        "E[sign(D(reals))] over 4 steps, how surely D calls its training images real, is above "
        "this target, and falls while below (ADA: 0.6); p is logged as ada/p. Unset: off (not "
        "official).")
    ada_kimg: float = _option(
        100.0, "With --ada-target: thousands of images over which p could go from 0 to 1 (ADA: "
        "500, for runs of millions of images).")
    ema_decay: float = _option(
        0.999, "Per-step decay of the EMA of G that samples and evaluations use, in [0, 1) "
        "(official: 0.999).")
    ema_start: int = _option(
        10, "Step at which G is copied into the EMA, which averages after it (official: 10).")
    ema_kimg: float | None = _option(
        None, "EMA half-life in thousands of images (StyleGAN2-ADA's ema_kimg), replacing "
        "--ema-decay: the per-step decay is 0.5 ** (batch / (1000 x ema_kimg)), so 0.999 at "
        "batch 256 is 177 kimg; unset: --ema-decay (official).")
    ema_rampup: float | None = _option(
        None, "With --ema-kimg, the half-life is at most this fraction of the images seen so far "
        "(ADA's ramp-up, so early averages do not hold on to the first weights); unset: no "
        "ramp-up (official).")
    ema_buffers: str = _option(
        "average", "BatchNorm statistics of the EMA: 'average' them like the weights (official: "
        "Keras averages every variable) or 'copy' them from G (StyleGAN2-ADA).",
        choices=EMA_BUFFERS)
    bn_recalibrate: int = _option(
        4, "Batches of random latents to recompute G_ema's BatchNorm statistics over before "
        "samples and FID; 0 keeps the moving averages, as the official code (they lag behind in "
        "short runs).")
    crop: str = _option(
        "center", "Crop before resizing: 'fixed' resizes the whole image, 'center' and 'random' "
        "keep --crop-proportion of it (official: random on ImageNet, fixed on faces).",
        choices=CROP_MODES)
    crop_proportion: float = _option(
        1.0, "Fraction of the image side that 'center' and 'random' crops keep, in (0, 1] "
        "(official: 0.875 on ImageNet, 1 elsewhere).")
    flip: bool = _option(
        True, "Random horizontal flips of the training images (official: on).")
    precision: str = _option(
        "fp32", "Arithmetic of the training step: 'fp32' (official), 'bf16' autocast with fp32 "
        "master weights, or 'fp16' autocast with loss scaling (R1 in fp32).",
        choices=TRAIN_PRECISIONS)
    d_width: float = _option(
        1.0, "Channels of D relative to the preset's, every layer, rounded (StyleGAN2-ADA's cbase "
        "in spirit), in (0, 4]: 0.5 keeps a quarter of D's FLOPs; 1 is the preset's (official) "
        "D.")
    d_mbstd: bool = _option(
        False, "StyleGAN's minibatch standard deviation channel in D (groups of 4): D sees how "
        "alike the images of a group are, which counters mode collapse; not official (off).")
    mode_seeking: float = _option(
        0.0, "Weight of mode seeking (MSGAN, Mao et al. 2019): fakes come in pairs (rows 2i, "
        "2i+1, one class each in a conditional run) and G's loss adds weight x the mean over "
        "pairs of 1 / (mean|G(z1) - G(z2)| / mean|z1 - z2| + 1e-5), which pays G for images that "
        "follow z; needs an even micro-batch; 0 is off (official).")
    output_init: str = _option(
        "official", "Initial output layers of G: 'official' truncated-normal(0.02), so the first "
        "images are grey (std about 0.05); 'data' then rescales and shifts them once so the "
        "first images have the data's per-channel mean and std.", choices=OUTPUT_INITS)
    channels: int | None = _option(
        None, "Image channels of G's output and D's input: 3 (RGB) or 1 (grey); unset: from "
        "the data, 1 when every training image is grey (mode L, or R = G = B), else 3 "
        "(official: 3, its data sets are colour).", choices=(1, 3))
    compile: bool = _option(
        False, "torch.compile the training forward of G (D stays eager: its penalty needs a "
        "double backward); not official (off).")
    seed: int = _option(
        0, "Seed of the initial weights, the latents, the data order and the crops: a run "
        "repeats with it.")
    deterministic: bool = _option(
        False, "torch's deterministic algorithms: slower, but a resumed CPU run matches an "
        "uninterrupted one bit for bit.")
    workers: int = _option(
        2, "Data-loading worker processes per training process; 0 loads in the process itself.")
    strict_data: bool = _option(
        False, "Fail on unreadable image files instead of skipping them with a warning.")
    log_every: int = _option(
        10, "Steps between records of the losses in RUN/log.jsonl (and TensorBoard); a skipped "
        "non-finite step is always recorded.")
    sample_every: int = _option(
        500, "Steps between grids of G_ema's samples of fixed latents in RUN/samples/.")
    checkpoint_every: int = _option(
        500, "Steps between checkpoints in RUN/checkpoints/; the end of the run and a stop by "
        "SIGINT or SIGTERM write one too.")
    keep_checkpoints: int = _option(
        3, "Checkpoints kept, the newest ones; older ones are deleted, except that of the best "
        "FID.")
    eval_every: int = _option(
        0, "Steps between FID/KID evaluations of G_ema against the training data (appended to "
        "RUN/metrics.jsonl); 0 is none.")
    eval_samples: int = _option(
        5000, "Generated images per periodic evaluation (--eval-every).")
    nan_patience: int = _option(
        5, "Non-finite steps in a row (each skipped, without an update) after which training "
        "stops, with exit status 3.")
    resume: str | None = _option(
        None, "'auto' continues from the newest valid checkpoint in --out (a fresh start if there "
        "is none); a checkpoint directory continues from that one; unset: a fresh start.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        for f in dataclasses.fields(self):  # None only where it is the default
            value, allowed = getattr(self, f.name), f.metadata["choices"]
            if allowed and value not in allowed and not (value is None and f.default is None):
                raise ValueError(f"{f.name}={value!r}: use one of {allowed}")
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
        bad = [p for p in self.augment.split(",") if p not in AUGMENTS]
        if bad:
            raise ValueError(f"augment={self.augment!r}: unknown {bad}; use a comma list of "
                             f"{AUGMENTS}")
        if self.ada_target is not None and not 0 < self.ada_target < 1:
            raise ValueError(f"ada_target={self.ada_target}: must be in (0, 1) (ADA: 0.6), or "
                             "left unset")
        if self.ada_target is not None and self.diffaug:
            raise ValueError("ada_target with diffaug: --diffaug augments every input of D, "
                             "--ada-target as often as D needs; choose one")
        if self.ada_kimg <= 0:
            raise ValueError(f"ada_kimg={self.ada_kimg}: must be > 0")
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
        if self.norm is not None:
            g = dataclasses.replace(g, norm=self.norm)
        return g if self.upsample is None else dataclasses.replace(g, upsample=self.upsample)

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
        group = self.discriminator_config().stddev_group
        if self.d_mbstd and per_device > group and per_device % group:
            raise ValueError(f"d_mbstd: D's minibatch standard deviation takes groups of {group} "
                             f"fakes or reals: make batch_per_device ({per_device}) a multiple "
                             f"of {group}, or turn it off with --no-d-mbstd")
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
    given = {**file_values, **overrides}
    if recipe == "auto" or (recipe is None and PRESETS[preset].generator.resolution
                            < AUTO_BELOW):
        choices = auto_recipe(preset, local_device())
        recipe_values = {c.option: c.value for c in choices}
        if "ema_decay" in given and "ema_kimg" not in given:  # an explicit decay wins
            recipe_values.pop("ema_kimg", None)
            recipe_values.pop("ema_rampup", None)
    # the auto recipe's choices by the data's size; --diffaug augments always: no ADA beside it
    size = bool(choices) and not given.get("diffaug")
    if "channels" not in given or size:  # read off the data: channels whatever the recipe
        found = data_choices(given.get("data", TrainConfig.data),
                             PRESETS[preset].generator.resolution,
                             channels="channels" not in given, size=size)
        choices += found
        recipe_values.update({c.option: c.value for c in found})
    values = {**PRESET_DEFAULTS.get(preset, {}), **recipe_values, **given}
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
