"""GAN objectives as pure functions, as the official utils/losses.py."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LOSSES = ("non-saturating", "hinge", "rpgan")


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "non-saturating":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "rpgan":  # pairs real i with fake i
        return F.softplus(fake_logits - real_logits).mean()
    raise ValueError(f"loss={kind!r}: use one of {LOSSES}")


def g_loss(fake_logits: torch.Tensor, kind: str, real_logits: torch.Tensor | None = None
           ) -> torch.Tensor:
    """``real_logits`` is needed by the relativistic loss only (G's gradient flows through the
    fakes alone)."""
    if kind == "non-saturating":
        return F.softplus(-fake_logits).mean()
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "rpgan":
        assert real_logits is not None, "the relativistic loss pairs fakes with reals"
        return F.softplus(real_logits.detach() - fake_logits).mean()
    raise ValueError(f"loss={kind!r}: use one of {LOSSES}")


def _input_grad(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return grad.flatten(1).float()  # (B, C*H*W)


def r1_penalty(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of |dD(x)/dx|^2 at the D inputs that gave ``logits`` (``inputs``
    must require grad): R1 on reals, R2 on fakes (R3GAN). The official cost multiplies this
    (no 1/2 factor as in StyleGAN's gamma/2)."""
    return _input_grad(logits, inputs).square().sum(1).mean()


def wgan_gp(discriminator: Callable[[torch.Tensor], torch.Tensor], reals: torch.Tensor,
            fakes: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Mean of (|grad D|_2 - 1)^2 at eps*real + (1-eps)*fake; eps has the inputs' shape
    (official: uniform per element)."""
    mixed = (eps * reals + (1 - eps) * fakes.detach()).requires_grad_(True)
    return (_input_grad(discriminator(mixed), mixed).norm(dim=1) - 1).square().mean()


def consistency_loss(real_logits: torch.Tensor, real_aug_logits: torch.Tensor,
                     fake_logits: torch.Tensor, fake_aug_logits: torch.Tensor) -> torch.Tensor:
    """bCR: MSE between logits of images and of their augmentations, for reals and fakes."""
    return (F.mse_loss(real_aug_logits, real_logits) + F.mse_loss(fake_aug_logits, fake_logits))


def mode_seeking_loss(fakes: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """MSGAN's term (Mao et al. 2019) over the pairs of rows (2i, 2i+1): the mean over pairs of
    1 / (mean|x1 - x2| / mean|z1 - z2| + 1e-5). Small when images differ as much as latents do."""
    x, z = fakes.float(), z.float()
    images = (x[0::2] - x[1::2]).abs().flatten(1).mean(1)  # (b/2,)
    latents = (z[0::2] - z[1::2]).abs().mean(1)
    return (1 / (images / latents + 1e-5)).mean()
