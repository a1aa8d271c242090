"""The loss phases of one training step, named as StyleGAN2-ADA's training/loss.py.

The official trainer (trainers/gan_trainer.py) updates G and D simultaneously, so every phase of
a step runs on one forward of the fakes and the reals:

- Gmain: G's adversarial loss on D(fakes); with ``mode_seeking`` > 0, plus MSGAN's term over
  pairs of fakes.
- Dmain: D's adversarial loss on D(reals) and D(fakes).
- Dreg, every ``penalty_every``-th step at cost x penalty_every (lazy regularisation; official:
  every step): R1 at the reals D saw, through the same forward (their input requires grad); R2
  at the fakes D saw; WGAN-GP at interpolates of reals and fakes, with its own D forward.
- Dbcr (``bcr``): D's logits of DiffAugmented copies against those of the images, the copies
  carrying no gradient into G.

What D sees of reals and fakes: the images, their DiffAugmented copies (``diffaug``), or with
ADA (``ada_target``) each image's copy with probability ``Inputs.aug_p``; R1 is taken at what D
saw. With ADA, Dmain also returns D/real_sign, E[sign(D(reals))], that steers p.

Random draws: the step's latents, flips, augmentation seed and fake labels come from the
trainer's generator for the whole global batch (``StepDraws``); within a micro-batch the k-th
augmentation (or WGAN-GP mix) is seeded ``seed + k`` and drawn for the global batch, then sliced
to the micro-batch's rows, in the phase order above. Any split over processes and micro-batches
therefore sees the same numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from hitgan.models.layers import onednn_fp32_linear
from hitgan.training.augment import diff_augment
from hitgan.training.config import TrainConfig
from hitgan.training.losses import (
    consistency_loss,
    d_loss,
    g_loss,
    mode_seeking_loss,
    r1_penalty,
    wgan_gp,
)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# What a loader yields per micro-batch: images (b, C, R, R), or [images, labels (b,)] (--cond)
MicroBatch = torch.Tensor | list[torch.Tensor]


@dataclass(frozen=True)
class Dreg:
    """The terms of D's regularisation phase."""
    r1: bool = False  # |dD/dx|^2 at the reals D saw (official)
    r2: bool = False  # the same at the fakes D saw (R3GAN's R1+R2)
    gp: bool = False  # WGAN-GP: (|dD/dx| - 1)^2 at interpolates


DREG = {"r1": Dreg(r1=True), "r1+r2": Dreg(r1=True, r2=True), "wgan": Dreg(gp=True),
        "none": Dreg()}  # --penalty -> its Dreg phase


def dreg_at(cfg: TrainConfig, step: int) -> Dreg:
    """Dreg of the step that follows ``step`` updates: the penalty's every penalty_every steps."""
    return DREG[cfg.penalty] if step % cfg.penalty_every == 0 else Dreg()


@dataclass(frozen=True)
class Inputs:
    """One micro-batch's share of a step: rows offset .. offset + b of the global batch."""
    reals: torch.Tensor  # (b, C, R, R), flipped where drawn, channels_last
    z: torch.Tensor  # (b, latent)
    offset: int
    seed: int  # augmentation k of this micro-batch is seeded seed + k
    real_labels: torch.Tensor | None = None  # (b,) in a conditional run
    fake_labels: torch.Tensor | None = None  # (b,)
    aug_p: float = 0.0  # with ADA: each image D sees is augmented with this probability


@dataclass(frozen=True)
class StepDraws:
    """A step's random draws for the global batch, from the trainer's generator in this order."""
    z: torch.Tensor  # (batch, latent)
    flips: torch.Tensor  # (batch,) bool
    seed: int  # the augmentations'
    fake_labels: torch.Tensor | None  # (batch,); None in an unconditional run

    @classmethod
    def draw(cls, gen: torch.Generator, batch: int, latent_dim: int,
             label_values: torch.Tensor | None, pairs: bool) -> StepDraws:
        """``label_values``: the dataset's labels, drawn from for the fakes (as often as each
        class occurs); ``pairs``: fakes 2i and 2i+1 share a class (mode seeking)."""
        z = torch.randn(batch, latent_dim, generator=gen)
        flips = torch.rand(batch, generator=gen) < 0.5
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        fake_labels = None  # drawn last: unconditional runs keep their random stream
        if label_values is not None:
            pick = torch.randint(len(label_values), (batch,), generator=gen)
            fake_labels = label_values[pick]  # (batch,)
            if pairs:
                fake_labels = fake_labels[0::2].repeat_interleave(2)
        return cls(z, flips, seed, fake_labels)

    def inputs(self, batch: MicroBatch, offset: int, micro: int, flip: bool,
               device: torch.device, aug_p: float = 0.0) -> Inputs:
        """The micro-batch at rows offset .. offset + micro of the global batch, on ``device``;
        ``aug_p``: ADA's augmentation probability this step."""
        reals, real_labels = batch if isinstance(batch, list | tuple) else (batch, None)
        if (real_labels is None) != (self.fake_labels is None):
            raise ValueError("a conditional run needs [images, labels] micro-batches and "
                             "an unconditional one images alone")
        rows = slice(offset, offset + micro)
        fake_labels = None
        if real_labels is not None and self.fake_labels is not None:
            real_labels = real_labels.to(device, non_blocking=True)
            fake_labels = self.fake_labels[rows].to(device)
        reals = reals.to(device, non_blocking=True)
        if flip:
            reals = torch.where(self.flips[rows].view(-1, 1, 1, 1).to(device), reals.flip(3),
                                reals)
        reals = reals.contiguous(memory_format=torch.channels_last)
        return Inputs(reals, self.z[rows].to(device), offset, self.seed, real_labels,
                      fake_labels, aug_p)


@dataclass(frozen=True)
class GANLoss:
    """Every phase's losses of one micro-batch, with graphs for G's and D's backward.

    ``dataclasses.replace(trainer.loss, precision="bf16", G=torch.compile(trainer.G))`` is the
    same loss in another autocast precision or with G compiled (fp16 also needs the trainer's
    grad scaler: build that Trainer with precision fp16)."""
    G: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]  # G, or its torch.compile
    D: nn.Module
    cfg: TrainConfig  # the objective: loss, penalty, bCR, DiffAugment, mode seeking, batch
    precision: str  # autocast: "fp32" (none), "bf16" or "fp16"
    device_type: str

    def _autocast(self, enabled: bool = True) -> AbstractContextManager[object]:
        dtype = AMP_DTYPES.get(self.precision)
        if dtype is None:  # fp32; on the CPU G's Linear layers go through oneDNN (layers.py)
            return onednn_fp32_linear() if self.device_type == "cpu" else nullcontext()
        if not enabled:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=dtype)

    def __call__(self, x: Inputs, dreg: Dreg) -> dict[str, torch.Tensor]:
        """G/loss (Gmain) and D/loss (Dmain + Dreg + Dbcr), with their terms."""
        cfg, calls = self.cfg, iter(range(1, 100))

        def draw() -> torch.Generator:  # the k-th random draw of the micro-batch
            return torch.Generator().manual_seed(x.seed + next(calls))

        def augment(images: torch.Tensor) -> torch.Tensor:
            return diff_augment(images, cfg.augment, draw(), x.offset, cfg.batch)

        def seen_by_d(images: torch.Tensor) -> torch.Tensor:  # (b, C, R, R)
            if cfg.diffaug:
                return augment(images)
            if x.aug_p > 0:  # ADA: each image's copy with probability aug_p (none drawn at 0)
                rows = slice(x.offset, x.offset + images.shape[0])
                pick = torch.rand(cfg.batch, generator=draw())[rows] < x.aug_p  # (b,)
                return torch.where(pick.view(-1, 1, 1, 1).to(images.device), augment(images),
                                   images)
            return images

        # Gmain and Dmain: the fakes
        with self._autocast():
            fakes = self.G(x.z, x.fake_labels)  # (b, C, R, R)
            fake_in = seen_by_d(fakes)
            fake_logits = self.D(fake_in, x.fake_labels)  # (b, 1)
            if dreg.r2:
                r2 = r1_penalty(fake_logits, fake_in)
        # Dmain and Dreg's R1: the reals, in fp32 when R1 meets fp16 (R1 is not loss-scaled)
        real_in = seen_by_d(x.reals).detach().requires_grad_(dreg.r1)
        with self._autocast(enabled=not (dreg.r1 and self.precision == "fp16")):
            real_logits = self.D(real_in, x.real_labels)  # (b, 1)
            out = {"G/loss": g_loss(fake_logits, cfg.loss, real_logits),
                   "D/loss_gan": d_loss(real_logits, fake_logits, cfg.loss)}
            if cfg.ada_target is not None:  # what steers ADA's p
                out["D/real_sign"] = real_logits.detach().float().sign().mean()
            if cfg.mode_seeking:  # Gmain
                out["G/mode_seeking"] = mode_seeking_loss(fakes, x.z)
                out["G/loss"] = out["G/loss"] + cfg.mode_seeking * out["G/mode_seeking"]
            # Dreg
            if dreg.r1:
                out["D/r1"] = r1_penalty(real_logits, real_in)
            if dreg.r2:
                out["D/r2"] = r2
            if dreg.gp:
                eps = torch.rand(cfg.batch, *x.reals.shape[1:], generator=draw())  # (B, C, R, R)
                eps = eps[x.offset:x.offset + x.reals.shape[0]].to(x.reals)  # (b, C, R, R)
                # interpolates between real i and fake i are scored as real i's class
                out["D/wgan_gp"] = wgan_gp(functools.partial(self.D, labels=x.real_labels),
                                           real_in.detach(), fakes, eps)
            penalties = [out[k] for k in ("D/r1", "D/r2", "D/wgan_gp") if k in out]
            d_total = out["D/loss_gan"] + cfg.penalty_cost * cfg.penalty_every * sum(penalties)
            if cfg.bcr:  # Dbcr
                aug = torch.cat((augment(x.reals), augment(fakes.detach()))).detach()
                aug_labels = (None if x.real_labels is None or x.fake_labels is None
                              else torch.cat((x.real_labels, x.fake_labels)))
                real_aug, fake_aug = self.D(aug, aug_labels).chunk(2)  # (2b, 1) -> 2 x (b, 1)
                out["D/bcr"] = consistency_loss(real_logits, real_aug, fake_logits, fake_aug)
                d_total = d_total + cfg.bcr_cost * out["D/bcr"]
        out["D/loss"] = d_total
        return out
