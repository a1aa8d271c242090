"""The discriminator's convolutions, with a double backward that stays fast.

R1 differentiates D's input gradient, so every convolution of D is differentiated twice. Autograd's
generic double backward of a convolution is slow on CPU: it computes the weight term as a
convolution of batch-transposed tensors (an H x W kernel) and, for the grouped blur, runs one
convolution per channel. Here each backward is written in ops whose own backward is an ordinary
first-order one, so R1's second pass costs plain convolution backward passes (StyleGAN2-ADA's
``conv2d_gradfix`` does the same for CUDA). Stride-1 'SAME' convolutions and the stride-2 blur are
all D needs.

Autocast: the Functions run on whatever dtypes they are given, so ``conv2d`` casts its arguments
to the autocast dtype itself, outside the Function, where the casts are recorded and gradients
reach the fp32 weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd import Function
from torch.autograd.graph import Node


def _autocast(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    device = next(t for t in tensors if t is not None).device.type
    if not torch.is_autocast_enabled(device):
        return list(tensors)
    dtype = torch.get_autocast_dtype(device)
    return [None if t is None else t.to(dtype) for t in tensors]


def _will_execute(node: Node) -> bool:
    """Whether this backward pass runs ``node``; ``needs_input_grad`` cannot tell. Without
    this, R1's input gradient and G's backward through D would compute every weight gradient
    of D and discard it (two of D's ~11 passes per step). The engine query is the one torch's
    own multi-grad hooks use; where it is missing, every gradient is computed."""
    will_execute = getattr(torch._C, "_will_engine_execute_node", None)
    return will_execute is None or bool(will_execute(node))


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Stride-1 convolution with 'SAME' padding (odd kernel), as F.conv2d."""
    x, weight, bias = _autocast(x, weight, bias)
    if torch.is_grad_enabled() and weight.requires_grad and weight.grad_fn is None:
        weight = weight.view_as(weight)  # the engine cannot be asked about a leaf's node
    return _Conv2d.apply(x, weight, bias)


def blur_downsample(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise 4x4 blur, stride 2, one pixel of padding: (B, C, H, W) -> (B, C, H/2, W/2).
    ``kernel`` is (C, 1, 4, 4) and fixed (it gets no gradient)."""
    return _BlurDown.apply(x, kernel)


class _Conv2d(Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
                ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.weight_node = weight.grad_fn  # set whenever the weight needs a gradient
        return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:  # the adjoint: a stride-1 transposed convolution
            gx = F.conv_transpose2d(grad, weight, padding=weight.shape[-1] // 2)
        if ctx.needs_input_grad[1] and _will_execute(ctx.weight_node):
            gw = _Conv2dWeightGrad.apply(grad, x, weight)
        if ctx.needs_input_grad[2]:
            gb = grad.sum((0, 2, 3))
        return gx, gw, gb


class _Conv2dWeightGrad(Function):
    """dL/dW of ``_Conv2d`` from (grad, x), through oneDNN's backward-weights primitive."""

    @staticmethod
    def forward(ctx, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grad, x)
        ctx.padding = weight.shape[-1] // 2
        p = ctx.padding
        return torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1,
            [False, True, False])[1]

    @staticmethod
    def backward(ctx, ggw: torch.Tensor):
        grad, x = ctx.saved_tensors
        g_grad = g_x = None
        if ctx.needs_input_grad[0]:
            g_grad = F.conv2d(x, ggw, padding=ctx.padding)
        if ctx.needs_input_grad[1]:
            g_x = F.conv_transpose2d(grad, ggw, padding=ctx.padding)
        return g_grad, g_x, None


def _blur_down(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, kernel.to(x.dtype), stride=2, padding=1, groups=x.shape[1])


def _blur_down_adjoint(g: torch.Tensor, kernel: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, *size). oneDNN's bf16 depthwise transposed convolution is 10-20x
    slower than its fp32 one, so this runs in fp32 (or wider)."""
    h, w = size
    dtype = torch.promote_types(g.dtype, torch.float32)
    out = F.conv_transpose2d(g.to(dtype), kernel.to(dtype), stride=2, padding=1,
                             groups=g.shape[1],
                             output_padding=(h - 2 * g.shape[-2], w - 2 * g.shape[-1]))
    return out.to(g.dtype)


class _BlurDown(Function):
    """The blur's gradient is its adjoint, whose gradient is the blur again, to any order."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(kernel)
        ctx.size = x.shape[-2:]
        return _blur_down(x, kernel)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (kernel,) = ctx.saved_tensors
        return _BlurDownAdjoint.apply(grad, kernel, ctx.size), None


class _BlurDownAdjoint(Function):
    @staticmethod
    def forward(ctx, grad: torch.Tensor, kernel: torch.Tensor, size: torch.Size) -> torch.Tensor:
        ctx.save_for_backward(kernel)
        return _blur_down_adjoint(grad, kernel, size)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (kernel,) = ctx.saved_tensors
        return _BlurDown.apply(grad, kernel), None, None
