"""DiffAugment (Zhao et al., 2020) as in the official utils/diff_augment.py, on NCHW batches.

Each operation is a pair: ``draw_*`` takes its random parameters for the whole global batch
(``total`` images) from an explicit CPU ``torch.Generator``, in the official order of draws, and
the operation applies them to this process's rows. So a run gives the same augmentations whatever
the number of processes, and parameters drawn elsewhere (by the official code, in
tests/test_official_step.py) can be replayed.

``AdaptiveProbability`` is StyleGAN2-ADA's controller of how often D's inputs are augmented.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]  # one operation's parameters, one value per image


def draw_color(gen: torch.Generator, total: int, h: int, w: int) -> Params:
    """Uniform [0, 1) factors: brightness adds factor - 0.5, saturation scales by 2 * factor,
    contrast by factor + 0.5."""
    return {k: torch.rand(total, generator=gen) for k in ("brightness", "saturation", "contrast")}


def color(x: torch.Tensor, p: Params) -> torch.Tensor:
    brightness, saturation, contrast = (p[k].to(x).view(-1, 1, 1, 1)
                                        for k in ("brightness", "saturation", "contrast"))
    x = x + (brightness - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (saturation * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (contrast + 0.5) + mean


def draw_translation(gen: torch.Generator, total: int, h: int, w: int, ratio: float = 0.125
                     ) -> Params:
    """Shifts of up to ratio * size pixels along each axis (height first, as the official)."""
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    return {"shift_y": torch.randint(-sh, sh + 1, (total,), generator=gen),
            "shift_x": torch.randint(-sw, sw + 1, (total,), generator=gen)}


def translation(x: torch.Tensor, p: Params) -> torch.Tensor:
    """Output pixel (i, j) of image b is input pixel (i + shift_y[b], j + shift_x[b]), zero
    where that falls outside."""
    b, _, h, w = x.shape
    # index into a 1-pixel zero-padded copy: 0 and size+1 are the zero border
    ys = (torch.arange(h, device=x.device)[None] + p["shift_y"][:, None] + 1).clamp(0, h + 1)
    xs = (torch.arange(w, device=x.device)[None] + p["shift_x"][:, None] + 1).clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (B, H+2, W+2, C)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)  # (B, C, H, W)


def draw_cutout(gen: torch.Generator, total: int, h: int, w: int, ratio: float = 0.5
                ) -> Params:
    """Centres of the (ratio * size)^2 squares (height first, as the official)."""
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    return {"cutout_y": torch.randint(0, h + (1 - ch % 2), (total,), generator=gen),
            "cutout_x": torch.randint(0, w + (1 - cw % 2), (total,), generator=gen)}


def cutout(x: torch.Tensor, p: Params, ratio: float = 0.5) -> torch.Tensor:
    """Zero a (ratio*size)^2 square centred at (cutout_y, cutout_x), clipped at the borders."""
    _, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top, left = (p["cutout_y"] - ch // 2)[:, None], (p["cutout_x"] - cw // 2)[:, None]
    ys, xs = torch.arange(h, device=x.device)[None], torch.arange(w, device=x.device)[None]
    in_y = (ys >= top) & (ys < top + ch)  # (B, H)
    in_x = (xs >= left) & (xs < left + cw)  # (B, W)
    keep = ~(in_y[:, :, None] & in_x[:, None, :])  # (B, H, W)
    return x * keep[:, None].to(x.dtype)


Draw = Callable[[torch.Generator, int, int, int], Params]
AUGMENTS: dict[str, tuple[Draw, Callable[[torch.Tensor, Params], torch.Tensor]]] = {
    "color": (draw_color, color),
    "translation": (draw_translation, translation),
    "cutout": (draw_cutout, cutout),
}


def draw(policy: str, gen: torch.Generator, total: int, size: tuple[int, int]) -> list[Params]:
    """The parameters of the comma-separated ``policy`` for ``total`` images of ``size`` (H, W),
    one entry per operation."""
    return [AUGMENTS[name][0](gen, total, *size) for name in policy.split(",")]


def apply(x: torch.Tensor, policy: str, params: list[Params], rows: slice) -> torch.Tensor:
    """Apply ``policy`` with ``params`` (from ``draw``) to ``x``, rows ``rows`` of the batch."""
    for name, p in zip(policy.split(","), params, strict=True):
        x = AUGMENTS[name][1](x, {k: v[rows].to(x.device) for k, v in p.items()})
    return x


def diff_augment(x: torch.Tensor, policy: str, gen: torch.Generator, offset: int = 0,
                 total: int | None = None) -> torch.Tensor:
    """Apply the comma-separated ``policy``; ``x`` holds rows [offset, offset + B) of a global
    batch of ``total`` (default: just ``x``)."""
    params = draw(policy, gen, total or x.shape[0], (x.shape[2], x.shape[3]))
    return apply(x, policy, params, slice(offset, offset + x.shape[0]))


@dataclass
class AdaptiveProbability:
    """StyleGAN2-ADA's adaptive augmentation probability p (Karras et al. 2020, section 3).

    D overfits when it calls its training images real with growing certainty; ADA measures that
    as r_t = E[sign(D(reals))] over ``interval`` steps and moves p by
    sign(r_t - target) x batch x interval / (speed_kimg x 1000): p could go from 0 to 1 in
    ``speed_kimg`` thousand images. p starts at 0, so a run whose D does not overfit is never
    augmented."""
    target: float  # ADA: 0.6
    speed_kimg: float  # ADA: 500
    batch: int
    interval: int = 4  # steps between adjustments (ADA: 4)
    p: float = 0.0
    rt: float | None = None  # the last interval's r_t
    signs: list[float] = field(default_factory=list)  # this interval's steps' E[sign(D(reals))]

    def update(self, real_sign: float) -> None:
        """Record one step's mean sign of D's logits on reals; adjust p every ``interval``."""
        self.signs.append(real_sign)
        if len(self.signs) < self.interval:
            return
        self.rt = sum(self.signs) / len(self.signs)
        self.signs = []
        direction = (self.rt > self.target) - (self.rt < self.target)
        adjust = direction * self.batch * self.interval / (self.speed_kimg * 1000)
        self.p = min(1.0, max(0.0, self.p + adjust))

    def state_dict(self) -> dict[str, object]:
        return {"p": self.p, "rt": self.rt, "signs": list(self.signs)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.p, self.rt, self.signs = state["p"], state["rt"], list(state["signs"])
