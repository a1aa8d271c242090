"""StyleGAN2-style residual discriminator, as the official HiT-GAN ``StyleGANDiscriminator``.

NCHW in, one logit per image out. Plain layers use Keras' default init (Glorot uniform kernels,
zero biases); with ``equalized_lr`` weights are N(0, 1) and scaled at run time (StyleGAN2).

Class-conditional (``num_classes > 0``): a projection discriminator (Miyato & Koyama, "cGANs
with Projection Discriminator", ICLR 2018): logit = out(h) + <embed(y), h> / sqrt(C) with h the
(B, C) features before the last layer. The 1/sqrt(C) scale and the N(0, 1) embedding are
StyleGAN2-ADA's (its ``cmap`` projection), so the inner product starts at the scale of out(h).
``num_classes=0`` builds exactly the unconditional model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hitgan.models.config import DiscriminatorConfig
from hitgan.models.gradfix import blur_downsample, conv2d

SLOPE = 0.2


class Conv2d(nn.Conv2d):
    """'SAME'-padded stride-1 conv with Keras init, or equalized learning rate."""

    def __init__(self, cin: int, cout: int, k: int, bias: bool = True, equalized: bool = False):
        self.equalized = equalized
        super().__init__(cin, cout, k, padding=k // 2, bias=bias)
        self.scale = 1 / math.sqrt(cin * k * k) if equalized else 1.0

    def reset_parameters(self) -> None:
        if self.equalized:
            nn.init.normal_(self.weight)
        else:
            nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.scale if self.equalized else self.weight
        return conv2d(x, w, self.bias)


class Dense(nn.Linear):
    """Linear with Keras init, or equalized learning rate."""

    def __init__(self, cin: int, cout: int, equalized: bool = False):
        self.equalized = equalized
        super().__init__(cin, cout)
        self.scale = 1 / math.sqrt(cin) if equalized else 1.0

    def reset_parameters(self) -> None:
        if self.equalized:
            nn.init.normal_(self.weight)
        else:
            nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.scale if self.equalized else self.weight
        return F.linear(x, w, self.bias)


class BlurDownsample(nn.Module):
    """Depthwise [1,3,3,1] blur with stride 2 and one pixel of padding per side (TF 'SAME')."""

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
        kernel = taps[:, None] * taps[None, :]
        kernel = (kernel / kernel.sum()).expand(channels, 1, 4, 4).contiguous()
        self.register_buffer("kernel", kernel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return blur_downsample(x, self.kernel)  # (B, C, H, W) -> (B, C, H/2, W/2)


def _downsample(channels: int, blur: bool) -> nn.Module:
    return BlurDownsample(channels) if blur else nn.AvgPool2d(2)


class DiscriminatorBlock(nn.Module):
    """conv3x3 - lrelu - down - conv3x3 - lrelu, plus down - conv1x1 skip, summed / sqrt(2)."""

    def __init__(self, cin: int, cout: int, blur: bool, equalized: bool):
        super().__init__()
        self.conv1 = Conv2d(cin, cin, 3, equalized=equalized)
        self.down1 = _downsample(cin, blur)
        self.conv2 = Conv2d(cin, cout, 3, equalized=equalized)
        self.skip_down = _downsample(cin, blur)
        self.skip = Conv2d(cin, cout, 1, bias=False, equalized=equalized)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv1(x), SLOPE)
        h = F.leaky_relu(self.conv2(self.down1(h)), SLOPE)  # (B, cout, H/2, W/2)
        return (h + self.skip(self.skip_down(x))) * (1 / math.sqrt(2))


class MinibatchStddev(nn.Module):
    """Appends the std over groups of samples (sample n is in group n % (B / group))."""

    def __init__(self, group: int = 4, features: int = 1):
        super().__init__()
        self.group, self.features = group, features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = min(b, self.group)
        if b % g:
            raise ValueError(f"minibatch stddev: batch size {b} is not a multiple of the group "
                             f"size {g}; use a batch size divisible by {g}")
        y = x.view(g, b // g, self.features, c // self.features, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(2, 3, 4))  # (B/g, F)
        y = y.repeat(g, 1)[:, :, None, None].expand(b, self.features, h, w)
        return torch.cat((x, y), dim=1)


class StyleGANDiscriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = cfg = config
        table, eq = cfg.channel_table, cfg.equalized_lr
        sizes = sorted(table, reverse=True)  # input resolution ... 4
        self.stem = Conv2d(cfg.in_channels, table[sizes[0]], 3, equalized=eq)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(table[r], table[r // 2], cfg.blur_resample, eq) for r in sizes[:-1])
        self.stddev = MinibatchStddev(cfg.stddev_group) if cfg.minibatch_stddev else None
        c4 = table[4]
        self.final_conv = Conv2d(c4 + int(cfg.minibatch_stddev), c4, 3, equalized=eq)
        # The official Flatten reads NHWC; the converter permutes this kernel to NCHW order.
        self.fc = Dense(c4 * 16, c4, equalized=eq)
        self.out = Dense(c4, 1, equalized=eq)
        self.class_embed = nn.Embedding(cfg.num_classes, c4) if cfg.num_classes else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """images (B, C, R, R), in [-1, 1], and for a conditional D labels (B,) -> logits
        (B, 1)."""
        if (labels is None) != (self.class_embed is None):
            raise ValueError(f"discriminator with num_classes={self.config.num_classes}: "
                             + ("pass labels (B,) with the images" if labels is None else
                                "it is unconditional, call it without labels"))
        x = F.leaky_relu(self.stem(images), SLOPE)
        for block in self.blocks:
            x = block(x)  # (B, C_r, r, r) -> (B, C_{r/2}, r/2, r/2)
        if self.stddev is not None:
            x = self.stddev(x)
        x = F.leaky_relu(self.final_conv(x), SLOPE)  # (B, C4, 4, 4)
        x = F.leaky_relu(self.fc(x.flatten(1)), SLOPE)  # (B, C4)
        if self.class_embed is None:
            return self.out(x)
        projection = (self.class_embed(labels).to(x.dtype) * x).sum(1, keepdim=True)  # (B, 1)
        return self.out(x) + projection * (1 / math.sqrt(x.shape[1]))
