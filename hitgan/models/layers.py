"""Leaf layers of the HiT generator. Tensors are channels-last: (B, ..., C).

Leaf layers take plain ints; the numerics follow the official Keras layers (BatchNorm eps 1e-3 and
momentum 0.99 in Keras terms, LayerNorm eps 1e-6, exact GELU, TF depth_to_space channel order).
"""

from __future__ import annotations

import contextlib
import contextvars
import platform
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

INIT_STD = 0.02  # official TruncatedNormal(stddev=0.02), cut at two standard deviations


def trunc_normal_(t: torch.Tensor) -> torch.Tensor:
    return nn.init.trunc_normal_(t, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)


# On x86 CPUs torch's fp32 Linear calls MKL's SGEMM, which picks its kernels by CPU vendor (it
# is reported to run AVX2 ones on AMD); oneDNN, which bf16 Linear and TensorFlow use, picks them
# by instruction set. G's fp32 products go through oneDNN (docs/performance.md).
ONEDNN_FP32 = (platform.machine().lower() in ("x86_64", "amd64")
               and torch.backends.mkldnn.is_available()
               and hasattr(torch.ops.mkldnn, "_linear_pointwise"))
_onednn_fp32 = contextvars.ContextVar("onednn_fp32", default=False)


@contextlib.contextmanager
def onednn_fp32_linear() -> Iterator[None]:
    """Within, ``Linear`` layers run fp32 products on the CPU through oneDNN when no autocast
    or compiler is on (where oneDNN is there: ``ONEDNN_FP32``), by ``OneDNNLinear``. The same
    function: outputs agree with MKL's to float rounding (about 1e-8 on hit-b-128). Sampling
    (``inference_fn``) and fp32 training steps on the CPU use it."""
    token = _onednn_fp32.set(ONEDNN_FP32)
    try:
        yield
    finally:
        _onednn_fp32.reset(token)


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
                  ) -> torch.Tensor:
    """x (..., in) @ weight (out, in).T + bias by oneDNN; plain weights (no backward)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class OneDNNLinear(torch.autograd.Function):
    """``onednn_linear`` with a gradient: the input's through oneDNN too, the weight's by
    torch's matmul (first order only: G's loss needs no double backward)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
                ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor  # (..., out)
                 ) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # (..., out) @ (out, in)
            grad_x = onednn_linear(grad, weight.t().contiguous(), None)
        rows = grad.reshape(-1, grad.shape[-1])  # (N, out)
        if ctx.needs_input_grad[1]:  # (out, N) @ (N, in)
            grad_w = rows.t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = rows.sum(0)
        return grad_x, grad_w, grad_b


class Linear(nn.Linear):
    """nn.Linear with the official generator init: truncated normal(0.02) kernel, zero bias."""

    def reset_parameters(self) -> None:
        trunc_normal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not torch.compiler.is_compiling() and _onednn_fp32.get()
                and x.dtype == torch.float32 and x.device.type == "cpu"
                and not torch.is_autocast_enabled("cpu")):
            return OneDNNLinear.apply(x, self.weight, self.bias)  # no graph without a gradient
        return super().forward(x)


class BatchNormLast(nn.Module):
    """Keras BatchNormalization over every axis but the last (channels-last input).

    With ``sync`` and an initialised process group of more than one process, training-mode
    statistics are summed over all processes (a differentiable all-reduce; works with gloo on
    CPU, where ``nn.SyncBatchNorm`` does not run).
    """

    def __init__(self, dim: int, sync: bool = False):
        super().__init__()
        self.sync = sync
        self.bn = nn.BatchNorm1d(dim, eps=1e-3, momentum=0.01)  # Keras momentum 0.99

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (N, C)
        if self.sync and self.training and dist.is_available() and dist.is_initialized() \
                and dist.get_world_size() > 1:
            return self._synced(flat).view(x.shape)
        return self.bn(flat).view(x.shape)

    def _synced(self, flat: torch.Tensor) -> torch.Tensor:
        c, bn = flat.shape[1], self.bn
        x32 = flat.float()
        count = torch.full((1,), float(flat.shape[0]), device=flat.device)
        stats = torch.cat((x32.sum(0), x32.square().sum(0), count))
        stats = _AllReduceSum.apply(stats)  # summed over processes, gradient flows back
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean.square()).clamp_min(0)
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked.item()
            bn.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            bn.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        out = (x32 - mean) * torch.rsqrt(var + bn.eps) * bn.weight + bn.bias
        return out.to(flat.dtype)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of every copy is the sum of all copies' gradients."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def make_norm(kind: str, dim: int) -> nn.Module:
    if kind == "layer":
        return nn.LayerNorm(dim, eps=1e-6)
    if kind in ("batch", "syncbatch"):
        return BatchNormLast(dim, sync=kind == "syncbatch")
    raise ValueError(f"norm={kind!r}: use 'batch', 'layer' or 'syncbatch'")


class PositionEmbedding(nn.Module):
    """Learned additive embedding of shape (1, *positions, C)."""

    def __init__(self, *shape: int):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(1, *shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight


MLP_CHUNK_ELEMENTS = 1 << 22  # hidden values per fc1 -> GELU -> fc2 pass (16 MiB in fp32)


class MLPBlock(nn.Module):
    """Pre-norm MLP with residual: x + W2 GELU(W1 norm(x)).

    After the norm every position is independent, so fc1 -> GELU -> fc2 runs over chunks of
    rows: the 4x-wide hidden layer (256 MiB per block at 128 px, batch 8) then stays small and
    cache- and allocator-friendly. Same function; memory-bound stages run about 1.25x faster.
    An exported graph (ONNX) has no chunks: its batch is dynamic, and its runtime plans memory.
    """

    def __init__(self, dim: int, norm: str, ratio: int = 4):
        super().__init__()
        self.norm = make_norm(norm, dim)
        self.fc1 = Linear(dim, dim * ratio)
        self.fc2 = Linear(dim * ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x).reshape(-1, x.shape[-1])  # (N, C), N = all positions
        rows = max(1, MLP_CHUNK_ELEMENTS // self.fc1.out_features)
        if torch.compiler.is_exporting() or h.shape[0] <= rows:
            return x + self.fc2(F.gelu(self.fc1(h))).view(x.shape)
        out = torch.cat([self.fc2(F.gelu(self.fc1(c))) for c in h.split(rows)])  # (N, C)
        return x + out.view(x.shape)


def depth_to_space(x: torch.Tensor, block: int) -> torch.Tensor:
    """TF ``depth_to_space`` on (B, H, W, C): channels read as (block_row, block_col, c)."""
    b, h, w, c = x.shape
    c_out = c // (block * block)
    x = x.view(b, h, w, block, block, c_out).transpose(2, 3)  # (B, H, bh, W, bw, C')
    return x.reshape(b, h * block, w * block, c_out)


class PixelShuffleUpsample(nn.Module):
    """Doubles the grid with depth_to_space; a Linear follows only if C/4 != out_dim."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Identity() if in_dim // 4 == out_dim else Linear(in_dim // 4, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(depth_to_space(x, 2))  # (B, H, W, C) -> (B, 2H, 2W, out_dim)


def upsample_nearest2x(x: torch.Tensor) -> torch.Tensor:
    b, h, w, c = x.shape  # (B, H, W, C) -> (B, 2H, 2W, C)
    return x[:, :, None, :, None, :].expand(b, h, 2, w, 2, c).reshape(b, 2 * h, 2 * w, c)


def upsample_bilinear2x(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, 2H, 2W, C), bilinear with half-pixel centres, edges replicated."""
    y = F.interpolate(x.permute(0, 3, 1, 2), scale_factor=2, mode="bilinear",
                      align_corners=False)  # (B, C, 2H, 2W), channels-last in memory as x
    return y.permute(0, 2, 3, 1)


class BilinearUpsample(nn.Module):
    """A Linear to out_dim, then a doubling of the grid by bilinear interpolation of every
    channel. Not official (see ``GeneratorConfig.upsample``): neighbouring pixels start alike.
    Interpolation weights sum to 1, so it commutes with the affine map: the same function as
    interpolating first, at a quarter of the multiply-adds."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_bilinear2x(self.proj(x))  # (B, H, W, C) -> (B, 2H, 2W, out_dim)


class SkipToRGB(nn.Module):
    """norm + Linear to image channels, added to the 2x upsampled previous image (nearest, as
    the official code; bilinear with ``smooth``)."""

    def __init__(self, dim: int, out_channels: int, norm: str, smooth: bool = False):
        super().__init__()
        self.norm = make_norm(norm, dim)
        self.proj = Linear(dim, out_channels)
        self.upsample = upsample_bilinear2x if smooth else upsample_nearest2x

    def forward(self, x: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        rgb = self.proj(self.norm(x))  # (B, H, W, C) -> (B, H, W, out)
        return rgb if image is None else rgb + self.upsample(image)
