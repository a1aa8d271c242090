"""bench/complexity.py: the config family, the global-attention baseline, its FLOP counts, and a
smoke run end to end (no timing assertions)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math

import pytest
import torch

from bench import complexity
from bench.complexity import (
    GLOBAL,
    HIT,
    GlobalAttentionBlock,
    GlobalAttentionGenerator,
    counted_flops,
    family_config,
)
from hitgan.models.config import PRESETS, GeneratorConfig
from hitgan.models.cost import generator_flops
from hitgan.models.generator import HiTGenerator

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def _extra_baseline_flops(cfg: GeneratorConfig) -> int:
    """Baseline FLOPs minus HiT FLOPs, written out per block (multi-query: one K/V head).

    A global block: Q and output projections 4nc^2, shared K/V 4ncd, scores and values 4n^2c,
    then the MLP. HiT's block: the same projections and MLP with attention over p^2 (local) and
    (s/p)^2 (dilated) keys for half the heads each, or the MLP alone in MLP-only stages.
    """
    extra = 0
    for s, c, h, p, layers in zip(cfg.grid_sizes, cfg.widths, cfg.heads, cfg.patch_sizes,
                                  cfg.layers, strict=True):
        n = s * s
        if p is None:
            extra += layers * (4 * n * c * c + 4 * n * c * (c // h) + 4 * n * n * c)
        else:
            extra += layers * (4 * n * n * c - 2 * n * c * (p * p + (s // p) ** 2))
    return extra


def test_family_cuts_hit_b_1024():
    base = PRESETS["hit-b-1024"].generator
    assert family_config(1024) == base
    for r in (16, 32, 64, 128, 256, 512):
        cfg = family_config(r)
        n = len(cfg.widths)
        assert cfg.resolution == r and cfg.grid_sizes == base.grid_sizes[:n]
        assert (cfg.widths, cfg.layers, cfg.heads) == (base.widths[:n], base.layers[:n],
                                                       base.heads[:n])
        assert cfg.patch_sizes[:-1] == base.patch_sizes[:n - 1] and cfg.patch_sizes[-1] is None
    assert family_config(128).patch_sizes == (4, 4, 8, 8, None)
    for bad in (8, 48, 2048):
        with pytest.raises(ValueError, match="resolution"):
            family_config(bad)


def test_global_block_is_global_multi_query_attention():
    """The baseline's attention against the explicit math on a 4x4 grid."""
    torch.manual_seed(0)
    block = GlobalAttentionBlock(8, 2, "layer", multi_query=True, mlp_ratio=2).eval()
    x = torch.randn(2, 4, 4, 8)
    attn = block.attn
    h = block.norm(x).flatten(1, 2)  # (B, N, C)
    q = attn.to_q(h).unflatten(-1, (2, 4)).transpose(1, 2)  # (B, heads, N, d)
    k, v = attn.to_kv(h).unflatten(-1, (2, 1, 4)).unbind(2)  # each (B, N, 1, d)
    k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, 1, N, d), shared by both heads
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1)  # (B, heads, N, N)
    expected = attn.to_out((weights @ v).transpose(1, 2).reshape(2, 16, 8)).view(2, 4, 4, 8)
    torch.testing.assert_close(attn(block.norm(x), h), expected)
    out = block(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_counted_flops_match_the_cost_model():
    for r in (32, 128):
        cfg = family_config(r)
        hit, _ = counted_flops(HiTGenerator, cfg)
        glob, _ = counted_flops(GlobalAttentionGenerator, cfg)
        assert hit == generator_flops(cfg)
        assert glob == generator_flops(cfg) + _extra_baseline_flops(cfg)


@pytest.mark.slow
def test_flops_per_pixel_grow_for_global_attention_only():
    """Deterministic counts: the baseline's extra cost per pixel grows at every size and its
    total per pixel grows from 128 px on; HiT's per-pixel cost never grows."""
    sizes = (32, 64, 128, 256, 512, 1024)
    hit, glob = [], []
    for r in sizes:
        cfg = family_config(r)
        hit.append(counted_flops(HiTGenerator, cfg)[0] / r**2)
        glob.append(counted_flops(GlobalAttentionGenerator, cfg)[0] / r**2)
    assert all(a > b for a, b in itertools.pairwise(hit))
    extra = [g - h for g, h in zip(glob, hit, strict=True)]
    assert all(a < b for a, b in itertools.pairwise(extra))
    assert all(a < b for a, b in itertools.pairwise(glob[2:]))
    assert glob[-1] > 100 * hit[-1]


@pytest.mark.slow
def test_smoke(tmp_path, capsys):
    out, png = tmp_path / "complexity.json", tmp_path / "complexity.png"
    argv = ["--resolutions", "16,32", "--repeats", "1", "--matmul-size", "256", "--json",
            str(out)]
    rows = complexity.main(argv + (["--plot", str(png)] if HAS_MATPLOTLIB else []))
    assert [(r.resolution, r.model) for r in rows] == [(16, HIT), (16, GLOBAL), (32, HIT),
                                                      (32, GLOBAL)]
    assert all(r.seconds > 0 and r.samples == 1 and r.note == "" for r in rows)
    assert rows[0].flops == generator_flops(family_config(16))
    printed = capsys.readouterr().out
    assert "| 32 | global attention |" in printed and "ns/pixel" in printed
    saved = json.loads(out.read_text())
    assert len(saved["rows"]) == 4 and set(saved["configs"]) == {"16", "32"}
    assert set(saved["matmul_gflops"]) == {"fp32", "bf16"}
    if HAS_MATPLOTLIB:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_smoke_not_run_rows_are_predicted(tmp_path, capsys):
    """With a tiny time budget every size after the first is predicted, not run."""
    png = tmp_path / "predicted.png"
    argv = ["--resolutions", "16,32", "--repeats", "1", "--max-seconds", "1e-6",
            "--matmul-size", "256", "--no-malloc-cache"]
    rows = complexity.main(argv + (["--plot", str(png)] if HAS_MATPLOTLIB else []))
    assert [r.seconds is None for r in rows] == [False, False, True, True]
    for r in rows[2:]:
        assert r.predicted_seconds > 0 and r.note.startswith("not run: predicted")
        assert r.flops > 0  # FLOPs are counted for every size
    assert "not run: predicted" in capsys.readouterr().out
    if HAS_MATPLOTLIB:
        assert png.exists()


@pytest.mark.parametrize("argv, message", [
    (["--resolutions", "48"], "--resolutions"),
    (["--resolutions", "2048"], "--resolutions"),
    (["--resolutions", "32,x"], "--resolutions"),
    (["--repeats", "0"], "must be >= 1"),
    (["--max-seconds", "0"], "must be > 0"),
    (["--matmul-size", "0"], "must be >= 1"),
    (["--dtype", "fp16"], "invalid choice"),
])
def test_bad_options(capsys, argv, message):
    with pytest.raises(SystemExit):
        complexity.parse_args(argv)
    assert message in capsys.readouterr().err


def test_default_resolutions_cover_32_to_1024():
    assert complexity.parse_args([]).resolutions == [32, 64, 128, 256, 512, 1024]
