"""Losses, penalties, bCR, DiffAugment and EMA against hand computations."""

import math

import pytest
import torch

from hitgan.training.augment import (
    AdaptiveProbability,
    cutout,
    diff_augment,
    draw_cutout,
    translation,
)
from hitgan.training.ema import EMA
from hitgan.training.losses import (
    consistency_loss,
    d_loss,
    g_loss,
    mode_seeking_loss,
    r1_penalty,
    wgan_gp,
)


def sp(x: float) -> float:  # softplus
    return math.log1p(math.exp(x))


def test_non_saturating_and_hinge_by_hand():
    real, fake = torch.tensor([[2.0], [-1.0]]), torch.tensor([[0.5], [-3.0]])
    expected_d = (sp(-2) + sp(1)) / 2 + (sp(0.5) + sp(-3)) / 2
    assert d_loss(real, fake, "non-saturating").item() == pytest.approx(expected_d, rel=1e-6)
    assert g_loss(fake, "non-saturating").item() == pytest.approx((sp(-0.5) + sp(3)) / 2)
    # hinge: mean relu(1 - real) + mean relu(1 + fake) = (0 + 2)/2 + (1.5 + 0)/2
    assert d_loss(real, fake, "hinge").item() == pytest.approx(1.0 + 0.75)
    assert g_loss(fake, "hinge").item() == pytest.approx(-(0.5 - 3) / 2)
    with pytest.raises(ValueError, match="loss='wasserstein'"):
        d_loss(real, fake, "wasserstein")


def test_relativistic_pairing_by_hand():
    """R3GAN: D minimises softplus(fake_i - real_i), G softplus(real_i - fake_i), paired by i;
    G's loss carries no gradient into the real logits."""
    real = torch.tensor([[2.0], [-1.0]], requires_grad=True)
    fake = torch.tensor([[0.5], [-3.0]])
    assert d_loss(real, fake, "rpgan").item() == pytest.approx((sp(-1.5) + sp(-2)) / 2)
    loss = g_loss(fake, "rpgan", real)
    assert loss.item() == pytest.approx((sp(1.5) + sp(2)) / 2)
    assert not loss.requires_grad  # the fakes here are constants: nothing flows to the reals


def _linear_d(w: torch.Tensor):
    return lambda x: (x.flatten(1) * w.flatten()).sum(1, keepdim=True) ** 2 / 2


def test_r1_by_hand():
    """D(x) = (w.x)^2 / 2 has gradient (w.x) w, so |grad|^2 = (w.x)^2 |w|^2."""
    w = torch.tensor([1.0, -2.0, 0.5, 3.0]).view(1, 1, 2, 2)
    x = torch.tensor([[1.0, 1.0, 2.0, 0.0], [0.0, 1.0, 0.0, 1.0]]).view(2, 1, 2, 2)
    x.requires_grad_(True)
    penalty = r1_penalty(_linear_d(w)(x), x)
    wx = [1 - 2 + 1, -2 + 3]  # w.x per sample
    expected = sum(v**2 * 14.25 for v in wx) / 2  # |w|^2 = 1 + 4 + .25 + 9
    assert penalty.item() == pytest.approx(expected)
    penalty.backward()  # double backward works (create_graph)
    assert x.grad is not None


def test_wgan_gp_by_hand():
    """A linear D has |grad| = |w| everywhere: penalty (|w| - 1)^2."""
    w = torch.tensor([3.0, 4.0]).view(1, 1, 1, 2)
    D = lambda x: (x.flatten(1) * w.flatten()).sum(1, keepdim=True)  # noqa: E731
    reals, fakes = torch.randn(3, 1, 1, 2), torch.randn(3, 1, 1, 2)
    gp = wgan_gp(D, reals, fakes, torch.rand(3, 1, 1, 2))
    assert gp.item() == pytest.approx((5 - 1) ** 2)


def test_consistency_by_hand():
    r, ra = torch.tensor([[1.0], [2.0]]), torch.tensor([[1.5], [0.0]])
    f, fa = torch.tensor([[0.0], [0.0]]), torch.tensor([[1.0], [-1.0]])
    # mean((r - ra)^2) + mean((f - fa)^2) = (0.25 + 4)/2 + (1 + 1)/2
    assert consistency_loss(r, ra, f, fa).item() == pytest.approx(2.125 + 1.0)


def test_mode_seeking_by_hand():
    fakes = torch.zeros(4, 1, 2, 2)
    fakes[1] = 0.5  # pair (0, 1): images 0.5 apart per pixel
    fakes[3] = 2.0  # pair (2, 3): 2.0 apart
    z = torch.zeros(4, 2)
    z[1] = 1.0  # latents 1.0 apart in both pairs
    z[3] = 1.0
    want = (1 / (0.5 + 1e-5) + 1 / (2.0 + 1e-5)) / 2
    assert mode_seeking_loss(fakes, z).item() == pytest.approx(want, rel=1e-6)
    alike = mode_seeking_loss(torch.zeros(4, 1, 2, 2), z)  # G ignores z: a large loss
    assert alike.item() == pytest.approx(1e5, rel=1e-6)


def test_translation_moves_pixels_and_fills_zero():
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    for ty in range(-2, 3):
        for tx in range(-2, 3):
            out = translation(x, {"shift_y": torch.tensor([ty]), "shift_x": torch.tensor([tx])})
            for i in range(4):
                for j in range(4):
                    si, sj = i + ty, j + tx
                    expected = x[0, 0, si, sj] if 0 <= si < 4 and 0 <= sj < 4 else 0.0
                    assert out[0, 0, i, j] == expected


def test_cutout_zeroes_a_square():
    x = torch.ones(64, 3, 16, 16)
    out = cutout(x, draw_cutout(torch.Generator().manual_seed(0), 64, 16, 16))
    zeros = (out[:, 0] == 0).sum(dim=(1, 2))
    assert zeros.max() == 64  # 8x8 when fully inside
    assert (zeros > 0).all() and (out[:, 0] == out[:, 2]).all()


def test_augment_slices_match_the_global_batch():
    """Two processes augmenting their halves == one process augmenting the whole batch."""
    x = torch.randn(8, 3, 16, 16)
    policy = "color,translation,cutout"
    full = diff_augment(x, policy, torch.Generator().manual_seed(3))
    halves = [diff_augment(x[o:o + 4], policy, torch.Generator().manual_seed(3), o, 8)
              for o in (0, 4)]
    torch.testing.assert_close(torch.cat(halves), full)


def test_ema_copies_at_start_then_averages():
    model = torch.nn.BatchNorm1d(2)
    ema = EMA(model, decay=0.9, start=10)
    with torch.no_grad():
        model.weight.fill_(5.0)
        model.running_mean.fill_(1.0)
    ema.update(model, 9)
    assert ema.model.weight[0] == 1.0  # before the start step: untouched
    ema.update(model, 10)
    assert ema.model.weight[0] == 5.0 and ema.model.running_mean[0] == 1.0  # copied
    with torch.no_grad():
        model.weight.fill_(15.0)
        model.running_mean.fill_(11.0)
    ema.update(model, 11)
    assert ema.model.weight[0].item() == pytest.approx(5.0 + 0.1 * 10)
    assert ema.model.running_mean[0].item() == pytest.approx(1.0 + 0.1 * 10)  # averaged
    copy_ema = EMA(model, decay=0.9, start=0, buffers="copy")
    copy_ema.update(model, 1)
    with torch.no_grad():
        model.running_mean.fill_(3.0)
    copy_ema.update(model, 2)
    assert copy_ema.model.running_mean[0] == 3.0


def test_ema_half_life_in_images():
    """ema_kimg: the decay halves the weight of a step's parameters after that many images,
    with ADA's ramp-up capping the half-life at ema_rampup x the images seen."""
    from hitgan.training.config import TrainConfig
    from hitgan.training.loop import Trainer

    ema = Trainer(TrainConfig(batch=32, ema_kimg=10, ema_rampup=0.05, workers=0),
                  progress=False).ema
    decay = ema.decay_at(1_000_000)
    assert decay ** (10_000 / 32) == pytest.approx(0.5)
    # step 100: 3,200 images seen: half-life 160 images = 5 steps
    assert ema.decay_at(100) ** 5 == pytest.approx(0.5)
    plain = Trainer(TrainConfig(ema_decay=0.99, workers=0), progress=False).ema
    assert plain.decay_at(100) == 0.99


def test_adaptive_probability_by_hand():
    """ADA's rule: every 4 steps p moves by sign(r_t - target) x 16 x 4 / (0.64 x 1000) = 0.1,
    within [0, 1]."""
    ada = AdaptiveProbability(target=0.6, speed_kimg=0.64, batch=16)
    history = []
    for signs in ([1, 1, 0.5, 0.5], [1, 1, 1, 1], [0.6] * 4, [0, 0, 0, -1], [-1] * 4, [-1] * 4):
        for s in signs:
            ada.update(s)
        history.append((round(ada.p, 6), round(ada.rt, 6)))
    assert history == [(0.1, 0.75), (0.2, 1.0), (0.2, 0.6), (0.1, -0.25), (0.0, -1.0),
                       (0.0, -1.0)]
    ada.update(1.0)  # a step into the next interval: p waits for the other three
    assert ada.p == 0.0 and ada.signs == [1.0]
    for _ in range(60):
        ada.update(1.0)
    assert ada.p == 1.0  # at most 1
    again = AdaptiveProbability(target=0.6, speed_kimg=0.64, batch=16)
    again.load_state_dict(ada.state_dict())
    assert again == ada
