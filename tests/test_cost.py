"""The analytic cost model agrees with torch's FLOP counter and with measured memory."""

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hitgan.models.config import PRESETS
from hitgan.models.cost import activation_bytes, generator_flops, stage_costs
from hitgan.models.generator import HiTGenerator


def _counted_flops(cfg, batch=2):
    with torch.device("meta"):
        G = HiTGenerator(cfg)
    with FlopCounterMode(display=False) as counter:
        G(torch.empty(batch, cfg.latent_dim, device="meta"))
    return counter.get_total_flops() // batch


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_analytic_flops_match_flop_counter(name):
    cfg = PRESETS[name].generator
    assert generator_flops(cfg) == _counted_flops(cfg)


@pytest.mark.parametrize("changes, costlier", [({"attention": "multi_head"}, True),
                                              ({"upsample": "bilinear"}, False)])
def test_analytic_flops_of_variants(changes, costlier):
    """Multi-head K/V costs more than the official multi-query; the bilinear upsampling's
    Linear runs at the low resolution: as many multiply-adds as the pixel shuffle's after it."""
    cfg = dataclasses.replace(PRESETS["hit-small-64"].generator, **changes)
    assert generator_flops(cfg) == _counted_flops(cfg)
    official = generator_flops(PRESETS["hit-small-64"].generator)
    assert generator_flops(cfg) > official if costlier else generator_flops(cfg) == official


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_stage_params_sum_to_model(name):
    cfg = PRESETS[name].generator
    with torch.device("meta"):
        total = sum(p.numel() for p in HiTGenerator(cfg).parameters())
    assert sum(r.params for r in stage_costs(cfg)) == total


def test_near_linear_cost_at_high_resolution():
    """MLP-only stages cost the same per pixel; 16x the pixels (256 -> 1024) costs < 4x."""
    rows = stage_costs(PRESETS["hit-b-1024"].generator)
    per_px = [r.flops / r.pixels for r in rows[-2:]]
    assert per_px[1] == pytest.approx(per_px[0], rel=0.05)
    assert generator_flops(PRESETS["hit-b-1024"].generator) < 4 * generator_flops(
        PRESETS["hit-b-256"].generator)


def test_activation_bytes_scale_with_batch_and_match_a_real_run():
    cfg = PRESETS["hit-tiny-32"].generator
    one, four = activation_bytes(cfg, 1), activation_bytes(cfg, 4)
    assert 3.5 * one < four <= 4 * one
    # the same accounting on a real CPU forward
    G = HiTGenerator(cfg).train()
    params = {p.untyped_storage().data_ptr() for p in G.parameters()}
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        G(torch.randn(4, cfg.latent_dim))
    assert sum(seen.values()) == pytest.approx(four, rel=0.05)
