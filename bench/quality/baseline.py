"""A plain DCGAN (Radford et al., 2016): the convolutional BASELINE that bench.quality trains
beside hitgan. It is not part of hitgan and is written here only to have a reference point.

G: z -> 4x4 transposed convolution -> (transposed conv 4x4 stride 2, BatchNorm, ReLU) up to the
resolution, tanh. D: the mirror image, strided convolutions with LeakyReLU(0.2) and BatchNorm
(none after the input layer), then a 4x4 convolution to one logit. At 32 px each is 4 layers.
Trained as in the DCGAN paper: non-saturating loss, no gradient penalty, Adam(2e-4, 0.5, 0.999).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BaselineConfig:
    resolution: int = 32
    latent_dim: int = 100
    width: int = 64  # channels of G's last and D's first hidden layer; doubled per halving
    out_channels: int = 3
    batch: int = 64
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    num_classes: int = 0  # unconditional; hitgan's evaluate() reads it of every generator

    def __post_init__(self) -> None:
        r = self.resolution
        if r < 16 or r & (r - 1):
            raise ValueError(f"baseline resolution={r}: use a power of two >= 16")

    @property
    def widths(self) -> list[int]:
        """Channels at 4x4, 8x8, ..., resolution/2 (G's order; D runs them backwards)."""
        n = int(math.log2(self.resolution)) - 2
        return [self.width * 2 ** (n - 1 - i) for i in range(n)]


class DCGANGenerator(nn.Module):
    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        self.config = cfg
        w = cfg.widths
        layers: list[nn.Module] = [nn.ConvTranspose2d(cfg.latent_dim, w[0], 4, bias=False),
                                   nn.BatchNorm2d(w[0]), nn.ReLU(True)]
        for a, b in itertools.pairwise(w):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b),
                       nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(w[-1], cfg.out_channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: None = None) -> torch.Tensor:
        """``labels``: always None (unconditional), as hitgan's sampling passes it."""
        return self.net(z[:, :, None, None])  # (B, Z) -> (B, C, R, R) in [-1, 1]


class DCGANDiscriminator(nn.Module):
    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        w = cfg.widths[::-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.out_channels, w[0], 4, 2, 1),
                                   nn.LeakyReLU(0.2, True)]
        for a, b in itertools.pairwise(w):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(w[-1], 1, 4))  # 4x4 -> 1x1
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)  # (B, 1)


def init_weights(m: nn.Module) -> None:
    """DCGAN's initialisation: N(0, 0.02) convolutions, N(1, 0.02) BatchNorm scales."""
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGANTrainer:
    """One step = one D update on a real batch and fresh fakes, then one G update."""

    def __init__(self, cfg: BaselineConfig, seed: int = 0):
        torch.manual_seed(seed)
        self.cfg = cfg
        self.G, self.D = DCGANGenerator(cfg), DCGANDiscriminator(cfg)
        self.G.apply(init_weights)
        self.D.apply(init_weights)
        self.opt_g = torch.optim.Adam(self.G.parameters(), cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), cfg.lr, betas=cfg.betas)
        self.gen = torch.Generator().manual_seed(seed)

    def train_step(self, reals: torch.Tensor) -> dict[str, float]:
        z = torch.randn(reals.shape[0], self.cfg.latent_dim, generator=self.gen)
        fakes = self.G(z)
        d_loss = (F.softplus(-self.D(reals)).mean()
                  + F.softplus(self.D(fakes.detach())).mean())
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        g_loss = F.softplus(-self.D(fakes)).mean()
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        return {"G/loss": g_loss.item(), "D/loss": d_loss.item()}
