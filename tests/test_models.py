"""Generator and discriminator behaviour: layouts, attention math, every preset trains."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hitgan.models import layers
from hitgan.models.attention import (
    CrossAttention,
    MultiAxisAttention,
    block_images,
    unblock_images,
)
from hitgan.models.config import PRESETS
from hitgan.models.discriminator import MinibatchStddev, StyleGANDiscriminator
from hitgan.models.generator import HiTGenerator
from hitgan.models.layers import depth_to_space

TINY = PRESETS["hit-tiny-32"]


def test_block_unblock_round_trip_and_tf_order():
    x = torch.randn(2, 8, 12, 5)
    blocked = block_images(x, 4)  # (2, 6, 16, 5)
    assert blocked.shape == (2, 6, 16, 5)
    assert torch.equal(unblock_images(blocked, grid_w=3, patch=4), x)
    # TF space_to_depth + reshape: patch g = gy * gw + gx, position p = py * patch + px
    gy, gx, py, px = 1, 2, 3, 1
    assert torch.equal(blocked[:, gy * 3 + gx, py * 4 + px], x[:, gy * 4 + py, gx * 4 + px])


def test_depth_to_space_tf_channel_order():
    x = torch.arange(2 * 3 * 3 * 8.0).view(2, 3, 3, 8)
    y = depth_to_space(x, 2)  # (2, 6, 6, 2): channel index = (row * 2 + col) * 2 + c
    for r in range(2):
        for c in range(2):
            k = (r * 2 + c) * 2
            assert torch.equal(y[:, 2 * 1 + r, 2 * 2 + c], x[:, 1, 2, k:k + 2])


def _reference_attention(q, k, v, axis):
    """Official einsum math: q (B, G, P, h, d), k/v with h heads, softmax over one axis."""
    scale = 1 / math.sqrt(q.shape[-1])
    if axis == "local":  # attend over P
        logits = torch.einsum("bgphd,bgqhd->bghpq", q, k) * scale
        return torch.einsum("bghpq,bgqhd->bgphd", logits.softmax(-1), v)
    logits = torch.einsum("bgphd,bkphd->bphgk", q, k) * scale  # dilated: over G
    return torch.einsum("bphgk,bkphd->bgphd", logits.softmax(-1), v)


@pytest.mark.parametrize("multi_query", [True, False])
def test_multi_axis_attention_matches_explicit_math(multi_query):
    torch.manual_seed(0)
    b, g, p, c, h = 2, 4, 16, 32, 4
    att = MultiAxisAttention(c, h, multi_query)
    x = torch.randn(b, g, p, c)
    d = c // h
    q = att.to_q(x).view(b, g, p, h, d)
    kv_heads = 1 if multi_query else h
    assert att.to_kv.out_features == 2 * kv_heads * d  # one shared K/V head in multi-query
    k, v = att.to_kv(x).view(b, g, p, 2, kv_heads, d).unbind(3)
    k, v = k.expand(b, g, p, h, d), v.expand(b, g, p, h, d)  # official tf.repeat
    half = h // 2
    local = _reference_attention(q[..., :half, :], k[..., :half, :], v[..., :half, :], "local")
    dilated = _reference_attention(q[..., half:, :], k[..., half:, :], v[..., half:, :],
                                   "dilated")
    expected = att.to_out(torch.cat((local, dilated), dim=3).reshape(b, g, p, c))
    torch.testing.assert_close(att(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("multi_query", [True, False])
def test_cross_attention_matches_explicit_math(multi_query):
    torch.manual_seed(0)
    b, c, h, t, ct = 2, 16, 4, 16, 24
    att = CrossAttention(c, h, ct, multi_query)
    x, tokens = torch.randn(b, 6, 6, c), torch.randn(b, t, ct)
    d, kvh = c // h, 1 if multi_query else h
    q = att.to_q(x).view(b, 36, h, d)
    k, v = att.to_kv(tokens).view(b, t, 2, kvh, d).unbind(2)
    logits = torch.einsum("bnhd,bthd->bhnt", q, k.expand(b, t, h, d)) / math.sqrt(d)
    out = torch.einsum("bhnt,bthd->bnhd", logits.softmax(-1), v.expand(b, t, h, d))
    expected = att.to_out(out.reshape(b, 6, 6, c))
    torch.testing.assert_close(att(x, tokens), expected, atol=1e-5, rtol=1e-5)


def _train_step_checks(preset_name: str, batch: int):
    preset = PRESETS[preset_name]
    torch.manual_seed(0)
    G, D = HiTGenerator(preset.generator), StyleGANDiscriminator(preset.discriminator)
    z = torch.randn(batch, preset.generator.latent_dim)
    images = G(z)
    r = preset.generator.resolution
    assert images.shape == (batch, 3, r, r)
    loss = F.softplus(-D(images)).mean()
    loss.backward()
    for model in (G, D):
        for name, p in model.named_parameters():
            assert p.grad is not None, f"{preset_name}: no gradient for {name}"
            assert torch.isfinite(p.grad).all(), f"{preset_name}: non-finite gradient in {name}"
            assert p.grad.abs().sum() > 0, f"{preset_name}: zero gradient for {name}"
    assert torch.isfinite(images).all()


@pytest.mark.parametrize(("name", "batch"), [
    ("hit-tiny-32", 4), ("hit-small-64", 2), ("hit-b-128", 2), ("hit-b-256", 1),
    pytest.param("hit-b-1024", 1, marks=pytest.mark.slow)])
def test_every_preset_forward_backward(name, batch):
    _train_step_checks(name, batch)


@pytest.mark.parametrize("changes", [
    {"norm": "layer"}, {"norm": "syncbatch"}, {"attention": "multi_head"},
    {"upsample": "bilinear"},
    {"upsample": "bilinear", "widths": (128, 66, 32), "heads": (4, 6, 2)}])  # no 4 | 66
def test_variants_forward_backward(changes):
    cfg = dataclasses.replace(TINY.generator, **changes)
    G = HiTGenerator(cfg)
    out = G(torch.randn(3, cfg.latent_dim))
    out.mean().backward()
    assert all(p.grad is not None for p in G.parameters())


def test_bilinear_upsampling_starts_with_alike_neighbours():
    """With pixel shuffle the pixels of a 2x2 block come from different channel groups of one
    token, independent at init; bilinear upsampling interpolates every channel, so what the
    latent puts into the image (the difference of two samples, free of the position
    embeddings' fixed pattern) starts smoother. The official layout stays the default."""
    def roughness(images: torch.Tensor) -> float:  # horizontal neighbour change over std
        return float((images[..., 1:] - images[..., :-1]).abs().mean() / images.std())

    assert TINY.generator.upsample == "pixel_shuffle"
    for seed in range(3):
        found = {}
        for kind in ("pixel_shuffle", "bilinear"):
            torch.manual_seed(seed)
            z = torch.randn(16, TINY.generator.latent_dim)
            G = HiTGenerator(dataclasses.replace(TINY.generator, upsample=kind, norm="layer"))
            images = G(z).detach()
            found[kind] = roughness(images[:8] - images[8:])
        assert found["bilinear"] < 0.8 * found["pixel_shuffle"], (seed, found)


def test_init_follows_official():
    torch.manual_seed(0)
    G = HiTGenerator(PRESETS["hit-small-64"].generator)
    kernels = torch.cat([m.weight.flatten() for m in G.modules()
                         if isinstance(m, torch.nn.Linear)])
    assert kernels.abs().max() <= 0.04  # truncated at 2 std
    assert abs(kernels.std().item() - 0.02 * 0.8796) < 5e-4  # std of N(0, .02) cut at 2 std
    assert all(m.bias.abs().max() == 0 for m in G.modules() if isinstance(m, torch.nn.Linear))
    bn = G.token_norm.bn
    assert (bn.eps, bn.momentum) == (1e-3, 0.01)
    pos = G.stages[0].pos_embed.weight
    assert pos.abs().max() <= 0.04 and pos.std() > 0.015


def test_batchnorm_statistics_update_like_keras():
    G = HiTGenerator(TINY.generator).train()
    tokens = G.to_tokens
    z = torch.randn(8, TINY.generator.latent_dim)
    with torch.no_grad():
        x = G.token_pos(tokens(z).view(8, 16, -1)).reshape(-1, tokens.out_features // 16)
        G(z)
    expected = 0.01 * x.mean(0)  # moving = 0.99 * moving + 0.01 * batch
    torch.testing.assert_close(G.token_norm.bn.running_mean, expected, atol=1e-6, rtol=1e-5)


def test_seeded_construction_and_forward_deterministic():
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        G = HiTGenerator(TINY.generator)
        outs.append(G(torch.randn(2, TINY.generator.latent_dim)))
    assert torch.equal(outs[0], outs[1])


def test_compiles_without_graph_breaks():
    G = HiTGenerator(dataclasses.replace(TINY.generator, attention="multi_head"))
    explanation = torch._dynamo.explain(G)(torch.randn(2, TINY.generator.latent_dim))
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    G = HiTGenerator(PRESETS["hit-small-64"].generator).eval()
    z = torch.randn(2, G.config.latent_dim)
    with torch.inference_mode():
        ref = G(z)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = G(z)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_minibatch_stddev_groups_like_official():
    x = torch.randn(8, 6, 4, 4)
    y = MinibatchStddev(group=4)(x)
    assert y.shape == (8, 7, 4, 4)
    xs = x.numpy().reshape(4, 2, 6, 4, 4)  # official: reshape (group, -1, ...), var over axis 0
    expected = np.sqrt(xs.var(axis=0) + 1e-8).mean(axis=(1, 2, 3))  # (2,)
    np.testing.assert_allclose(y[:, 6, 0, 0].numpy(), np.tile(expected, 4), rtol=1e-5)
    with pytest.raises(ValueError, match="batch size 6"):
        MinibatchStddev(group=4)(torch.randn(6, 2, 4, 4))


@pytest.mark.parametrize("options", [
    {"blur_resample": False}, {"equalized_lr": True, "minibatch_stddev": True}])
def test_discriminator_options(options):
    cfg = dataclasses.replace(TINY.discriminator, **options)
    D = StyleGANDiscriminator(cfg)
    logits = D(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    if cfg.equalized_lr:
        assert abs(D.stem.weight.std().item() - 1) < 0.2


def test_recalibrate_batchnorm_sets_exact_statistics():
    torch.manual_seed(0)
    G = HiTGenerator(TINY.generator).eval()
    G.recalibrate_batchnorm(batches=2, batch_size=4, seed=5)
    gen = torch.Generator().manual_seed(5)
    zs = [torch.randn(4, G.config.latent_dim, generator=gen) for _ in range(2)]
    with torch.no_grad():
        x = torch.cat([G.token_pos(G.to_tokens(z).view(4, 16, -1)).reshape(-1, 128)
                       for z in zs])
    torch.testing.assert_close(G.token_norm.bn.running_mean, x.mean(0), atol=1e-6, rtol=1e-5)
    assert G.token_norm.bn.momentum == 0.01 and not G.training


@pytest.mark.parametrize("preset", ["hit-tiny-32", "hit-small-64"])  # one and two SkipToRGBs
def test_match_output_statistics(preset):
    torch.manual_seed(0)
    G = HiTGenerator(PRESETS[preset].generator).eval()
    before = [b.clone() for b in G.buffers()]
    mean, std = torch.tensor([-0.8, 0.1, 0.3]), torch.tensor([0.55, 0.4, 0.2])
    G.match_output_statistics(mean, std, batch_size=16, seed=3)
    assert not G.training
    assert all(torch.equal(a, b) for a, b in zip(before, G.buffers(), strict=True))
    z = torch.randn(16, G.config.latent_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = G.train()(z)  # the same batch: matched exactly
    torch.testing.assert_close(out.mean((0, 2, 3)), mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std((0, 2, 3)), std, atol=1e-5, rtol=1e-4)
    if preset == "hit-tiny-32":  # new latents: close
        with torch.no_grad():
            other = G(torch.randn(128, G.config.latent_dim))
        torch.testing.assert_close(other.mean((0, 2, 3)), mean, atol=0.05, rtol=0)
        torch.testing.assert_close(other.std((0, 2, 3)), std, atol=0, rtol=0.15)


def test_cpu_inference_chunks_do_not_change_the_output(monkeypatch):
    import hitgan.models.generator as generator_module

    torch.manual_seed(0)
    G = HiTGenerator(TINY.generator).eval()
    z = torch.randn(5, TINY.generator.latent_dim)
    with torch.no_grad():
        whole = G(z)
        monkeypatch.setattr(generator_module, "EVAL_CHUNK_BYTES", 1)  # one image per chunk
        chunked = G(z)
        one = G(z[3:4])
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(one, whole[3:4], atol=1e-6, rtol=1e-5)


def test_mlp_row_chunks_are_the_same_function(monkeypatch):
    """fc1 -> GELU -> fc2 over row chunks: outputs, input and weight gradients, BN statistics."""
    import hitgan.models.layers as layers

    def run():
        torch.manual_seed(0)
        block = layers.MLPBlock(16, "batch")
        x = torch.randn(2, 8, 8, 16, requires_grad=True)
        y = block(x)
        y.square().sum().backward()
        return y, x.grad, block.fc1.weight.grad, block.norm.bn.running_var

    whole = run()
    monkeypatch.setattr(layers, "MLP_CHUNK_ELEMENTS", 64 * 7)  # 7 rows per chunk, ragged end
    chunked = run()
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_inference_fn_modes():
    from hitgan.sampling import inference_fn

    torch.manual_seed(0)
    G = HiTGenerator(TINY.generator)
    z = torch.randn(2, TINY.generator.latent_dim)
    with torch.inference_mode():
        ref = G.eval()(z)
        bf16 = inference_fn(G, "bf16")(z)
    assert not G.training and bf16.dtype == torch.float32
    assert 0 < (bf16 - ref).abs().max() < 1e-2 * max(1.0, ref.abs().max().item())
    with pytest.raises(ValueError, match="--precision fp16"):
        inference_fn(G, "fp16")


@pytest.mark.skipif(not layers.ONEDNN_FP32, reason="oneDNN's fp32 linear is an x86 CPU op")
def test_fp32_sampling_runs_linear_through_onednn(monkeypatch):
    """inference_fn's eager fp32 forward takes oneDNN for every Linear (the same images); the
    plain forward and bf16 autocast keep torch's own Linear; with a gradient recorded (fp32
    training) oneDNN runs the forward and the input's gradient."""
    from hitgan.sampling import inference_fn

    calls = []
    onednn = layers.onednn_linear
    monkeypatch.setattr(layers, "onednn_linear", lambda *a: calls.append(1) or onednn(*a))
    torch.manual_seed(0)
    G = HiTGenerator(TINY.generator).eval()
    linears = sum(isinstance(m, torch.nn.Linear) for m in G.modules())
    z = torch.randn(2, TINY.generator.latent_dim)
    with torch.inference_mode():
        ref = G(z)
        assert not calls
        got = inference_fn(G, "fp32")(z)
        assert len(calls) >= linears
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
        calls.clear()
        inference_fn(G, "bf16")(z)
    assert not calls
    G(z).sum().backward()
    assert not calls
    with layers.onednn_fp32_linear():
        out = G(z)
    out.sum().backward()
    assert len(calls) > linears and G.to_grid.weight.grad is not None  # z needs no gradient


@pytest.mark.skipif(not layers.ONEDNN_FP32, reason="oneDNN's fp32 linear is an x86 CPU op")
def test_onednn_linear_gradients_are_torchs():
    """OneDNNLinear (fp32 training on the CPU) against F.linear: output and the gradients of
    input, weight and bias, on a channels-last (B, H, W, C) input."""
    torch.manual_seed(0)
    lin = layers.Linear(24, 40)
    x = torch.randn(2, 5, 7, 24, requires_grad=True)
    grad = torch.randn(2, 5, 7, 40)
    ref = F.linear(x, lin.weight, lin.bias)
    expected = torch.autograd.grad(ref, (x, lin.weight, lin.bias), grad)
    with layers.onednn_fp32_linear():
        out = lin(x)
    assert out.grad_fn is not None and "OneDNNLinear" in type(out.grad_fn).__name__
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    for got, want in zip(torch.autograd.grad(out, (x, lin.weight, lin.bias), grad), expected,
                         strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_malloc_caching_applies_once_and_respects_the_environment(monkeypatch):
    import sys

    from hitgan import runtime

    monkeypatch.setattr(runtime, "_applied", None)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert runtime.cache_large_allocations() is False  # the user's setting wins
    monkeypatch.setattr(runtime, "_applied", None)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    expected = sys.platform.startswith("linux")
    assert runtime.cache_large_allocations() is expected
    assert runtime.cache_large_allocations() is expected
