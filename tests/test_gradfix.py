"""D's convolutions with the hand-written double backward (hitgan/models/gradfix.py) compute the
same function and derivatives as PyTorch's own, to second order (R1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from hitgan.models import discriminator, gradfix
from hitgan.models.config import DiscriminatorConfig
from hitgan.training.losses import d_loss, r1_penalty


def _native_conv2d(x, weight, bias):
    return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)


def _native_blur(x, kernel):
    return F.conv2d(x, kernel.to(x.dtype), stride=2, padding=1, groups=x.shape[1])


@pytest.mark.parametrize("k,bias", [(1, False), (3, True)])
def test_conv2d_gradients_to_second_order(k, bias):
    g = torch.Generator().manual_seed(k)
    x = torch.randn(2, 3, 6, 5, dtype=torch.double, generator=g, requires_grad=True)
    w = torch.randn(4, 3, k, k, dtype=torch.double, generator=g, requires_grad=True)
    b = torch.randn(4, dtype=torch.double, generator=g, requires_grad=True) if bias else None
    args = (x, w, b)
    assert torch.equal(gradfix.conv2d(*args), _native_conv2d(*args))
    with torch.no_grad():
        assert torch.equal(gradfix.conv2d(*args), _native_conv2d(*args))
    assert gradcheck(gradfix.conv2d, args)
    assert gradgradcheck(gradfix.conv2d, args)


@pytest.mark.parametrize("size", [(8, 8), (9, 6)])
def test_blur_downsample_gradients_to_second_order(size):
    x = torch.randn(2, 3, *size, dtype=torch.double, requires_grad=True)
    kernel = discriminator.BlurDownsample(3).kernel.double()
    assert torch.allclose(gradfix.blur_downsample(x, kernel), _native_blur(x, kernel))
    assert gradcheck(lambda t: gradfix.blur_downsample(t, kernel), (x,))
    assert gradgradcheck(lambda t: gradfix.blur_downsample(t, kernel), (x,))


def test_weight_gradient_only_when_the_pass_uses_it(monkeypatch):
    """R1's input gradient (and G's backward through D) would otherwise compute every weight
    gradient of D and throw it away. Requested weight gradients still come, also through
    autograd.grad on a leaf."""
    calls = []
    forward = gradfix._Conv2dWeightGrad.forward
    monkeypatch.setattr(gradfix._Conv2dWeightGrad, "forward",
                        staticmethod(lambda ctx, *a: calls.append(1) or forward(ctx, *a)))
    x = torch.randn(2, 3, 5, 5, dtype=torch.double, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.double, requires_grad=True)
    (gx,) = torch.autograd.grad(gradfix.conv2d(x, w, None).square().sum(), x)
    assert not calls
    (ref,) = torch.autograd.grad(_native_conv2d(x, w, None).square().sum(), x)
    assert torch.allclose(gx, ref)
    (gw,) = torch.autograd.grad(gradfix.conv2d(x, w, None).square().sum(), w)
    (ref,) = torch.autograd.grad(_native_conv2d(x, w, None).square().sum(), w)
    assert calls and torch.allclose(gw, ref)
    gradfix.conv2d(x, w, None).square().sum().backward()
    assert torch.allclose(w.grad, ref)


def _r1_step_gradients(D, reals, fakes):
    reals = reals.detach().requires_grad_(True)
    real_logits = D(reals)
    loss = d_loss(real_logits, D(fakes), "non-saturating") + 10 * r1_penalty(real_logits, reals)
    params = list(D.parameters())
    return loss, torch.autograd.grad(loss, params)


@pytest.mark.parametrize("options", [{}, {"blur_resample": False},
                                     {"equalized_lr": True, "minibatch_stddev": True}])
def test_discriminator_r1_step_matches_native_ops(monkeypatch, options):
    torch.manual_seed(0)
    cfg = DiscriminatorConfig(resolution=16, channels=(8, 16, 16), **options)
    D = discriminator.StyleGANDiscriminator(cfg).double().to(memory_format=torch.channels_last)
    reals, fakes = torch.randn(2, 4, 3, 16, 16, dtype=torch.double)
    loss, grads = _r1_step_gradients(D, reals, fakes)
    monkeypatch.setattr(discriminator, "conv2d", _native_conv2d)
    monkeypatch.setattr(discriminator, "blur_downsample", _native_blur)
    ref_loss, ref_grads = _r1_step_gradients(D, reals, fakes)
    assert torch.allclose(loss, ref_loss, rtol=1e-12, atol=0)
    for g, ref in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, ref, rtol=1e-9, atol=1e-12)


def test_discriminator_r1_step_under_bf16_autocast(monkeypatch):
    """Autocast casts inside gradfix.conv2d; gradients reach the fp32 weights as fp32 and are
    as close to the fp32 step's as PyTorch's own autocast path is."""
    torch.manual_seed(0)
    cfg = DiscriminatorConfig(resolution=16, channels=(16, 32, 32))
    D = discriminator.StyleGANDiscriminator(cfg).to(memory_format=torch.channels_last)
    reals, fakes = torch.randn(2, 4, 3, 16, 16)
    _, fp32 = _r1_step_gradients(D, reals, fakes)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, ours = _r1_step_gradients(D, reals, fakes)
    monkeypatch.setattr(discriminator, "conv2d", _native_conv2d)
    monkeypatch.setattr(discriminator, "blur_downsample", _native_blur)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, native = _r1_step_gradients(D, reals, fakes)

    def cos(a, b):
        return F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()

    for g, nat, ref, p in zip(ours, native, fp32, D.parameters(), strict=True):
        assert g.dtype == p.dtype == torch.float32
        assert cos(g, ref) > 0.98 and cos(g, ref) > cos(nat, ref) - 1e-3
