"""Exponential moving average of the generator, as the official trainer.

At step ``start`` (counted after the optimizer update, like the official global step) the EMA
model is set to the generator; after it every variable moves as ema -= (1 - decay) * (ema - g).
The official EMA covers all Keras variables, so BatchNorm moving statistics are averaged too
(``buffers="average"``); ``buffers="copy"`` copies them instead (StyleGAN2-ADA's choice).
With ``kimg``, the decay follows a half-life in thousands of images instead (StyleGAN2-ADA's
ema_kimg, optionally ramped up).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.999, start: int = 10,
                 buffers: str = "average", kimg: float | None = None,
                 rampup: float | None = None, batch: int = 1):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.start, self.buffers = decay, start, buffers
        self.kimg, self.rampup, self.batch = kimg, rampup, batch

    def decay_at(self, step: int) -> float:
        """The decay of update ``step``: ``decay``, or from the half-life of ``kimg`` thousand
        images at ``batch`` images a step, at most ``rampup`` x the images seen (ADA)."""
        if self.kimg is None:
            return self.decay
        half_life = self.kimg * 1000  # images
        if self.rampup is not None:
            half_life = min(half_life, step * self.batch * self.rampup)
        return 0.5 ** (self.batch / max(half_life, 1e-8))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Call after the optimizer step that made ``step`` updates in total."""
        if step < self.start:
            return
        ema_params = dict(self.model.named_parameters())
        ema_buffers = dict(self.model.named_buffers())
        if step == self.start:
            for name, p in model.named_parameters():
                ema_params[name].copy_(p)
            for name, b in model.named_buffers():
                ema_buffers[name].copy_(b)
            return
        weight = 1 - self.decay_at(step)
        for name, p in model.named_parameters():
            ema_params[name].lerp_(p, weight)
        for name, b in model.named_buffers():
            if self.buffers == "average" and b.is_floating_point():
                ema_buffers[name].lerp_(b, weight)
            else:
                ema_buffers[name].copy_(b)
