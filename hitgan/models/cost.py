"""Analytic cost model of the HiT generator: parameters, FLOPs and activation memory per stage.

FLOPs count multiply-adds as 2 and cover the matrix products (Linear layers and the two attention
products), the same operations ``torch.utils.flop_counter`` counts; elementwise work (norms, GELU,
adds) is memory-bound and left out. Activation memory is measured, not guessed: the forward runs
on the ``meta`` device (no compute, no allocation) and the tensors autograd saves for backward are
summed, once per storage. ``cost_table`` and ``pixel_cost_table`` lay them out for
``hitgan info``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hitgan.models.config import GeneratorConfig, get_preset
from hitgan.models.discriminator import StyleGANDiscriminator
from hitgan.models.generator import HiTGenerator
from hitgan.models.layers import BilinearUpsample


@dataclass(frozen=True)
class StageCost:
    name: str  # "input", "stage 0 (8x8)", ...
    params: int  # trainable parameters
    flops: int  # forward FLOPs per image
    pixels: int  # grid positions of the stage


def _attention_flops(n_query: int, n_key: int, dim: int, heads: int) -> int:
    """QK^T and AV: per query and head, 2 products of key_dim x n_key multiply-adds."""
    return 2 * 2 * n_query * n_key * (dim // heads) * heads


def _block_projection_flops(n: int, dim: int, kv_in: int, kv_heads: int, head_dim: int,
                            n_kv: int, mlp_ratio: int) -> int:
    q_out = 2 * 2 * n * dim * dim  # query and output projections
    kv = 2 * n_kv * kv_in * 2 * kv_heads * head_dim
    mlp = 2 * 2 * n * dim * dim * mlp_ratio
    return q_out + kv + mlp


def stage_costs(cfg: GeneratorConfig) -> list[StageCost]:
    """Per-stage forward FLOPs per image and parameters (upsampling counted in the stage it
    feeds); the first row is the input projections and latent tokens."""
    with torch.device("meta"):
        model = HiTGenerator(cfg)
    w0, t = cfg.widths[0], cfg.latent_tokens
    in_params = sum(p.numel() for m in (model.to_grid, model.to_tokens, model.token_pos,
                                        model.token_norm) for p in m.parameters())
    rows = [StageCost("input", in_params,
                      2 * cfg.latent_dim * (cfg.initial_size**2 + t) * w0, 0)]
    for i, stage in enumerate(model.stages):
        s, c, h, p = cfg.grid_sizes[i], cfg.widths[i], cfg.heads[i], cfg.patch_sizes[i]
        n, hd = s * s, c // h
        kv_heads = 1 if cfg.attention == "multi_query" else h
        flops = (_block_projection_flops(n, c, w0, kv_heads, hd, t, cfg.mlp_ratio)
                 + _attention_flops(n, t, c, h))  # cross-attention block
        for _ in range(cfg.layers[i]):
            if p is None:
                flops += 2 * 2 * n * c * c * cfg.mlp_ratio
            else:
                flops += _block_projection_flops(n, c, c, kv_heads, hd, n, cfg.mlp_ratio)
                half = h // 2  # local over p*p keys, dilated over (s/p)^2 keys
                flops += (_attention_flops(n, p * p, c * half // h, half)
                          + _attention_flops(n, (s // p) ** 2, c * half // h, half))
        if stage.to_rgb is not None:
            flops += 2 * n * c * cfg.out_channels
        params = sum(q.numel() for q in stage.parameters())
        up = model.upsamples[i - 1] if i > 0 else None
        if up is not None and isinstance(up.proj, torch.nn.Linear):
            at = n // 4 if isinstance(up, BilinearUpsample) else n  # its Linear precedes the 2x
            flops += 2 * at * up.proj.in_features * c
            params += sum(q.numel() for q in up.parameters())
        rows.append(StageCost(f"stage {i} ({s}x{s}{', MLP' if p is None else f', p{p}'})",
                              params, flops, n))
    return rows


def generator_flops(cfg: GeneratorConfig) -> int:
    """Forward FLOPs per image."""
    return sum(r.flops for r in stage_costs(cfg))


def activation_bytes(cfg: GeneratorConfig, batch: int, dtype: torch.dtype = torch.float32
                     ) -> int:
    """Bytes autograd keeps for backward in a training-mode forward at ``batch``; measured on the
    meta device, each storage once (parameters excluded)."""
    with torch.device("meta"):
        model = HiTGenerator(cfg).to(dtype)
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in params:
            seen[key] = t.untyped_storage().nbytes()
        return t

    z = torch.empty(batch, cfg.latent_dim, device="meta", dtype=dtype)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.train()(z)
    return sum(seen.values())


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def cost_table(preset: str, batch: int = 1) -> list[str]:
    """The lines of ``hitgan info`` for ``preset``: parameters, forward GFLOP per image and FLOP
    per output pixel of each generator stage, activation memory for backward at ``batch``, and
    the discriminator's parameters."""
    p = get_preset(preset)
    cfg, rows = p.generator, stage_costs(p.generator)
    with torch.device("meta"):
        d_params = sum(q.numel() for q in StyleGANDiscriminator(p.discriminator).parameters())
    lines = [f"{preset}: {p.note}",
             f"  generator {cfg.resolution}px, latent {cfg.latent_dim}, attention "
             f"{cfg.attention}, norm {cfg.norm}",
             f"  {'part':<24}{'params':>14}{'GFLOP/img':>12}{'FLOP/px':>12}"]
    for r in rows:
        per_px = f"{r.flops / r.pixels:,.0f}" if r.pixels else "-"
        lines.append(f"  {r.name:<24}{r.params:>14,}{r.flops / 1e9:>12.3f}{per_px:>12}")
    total = sum(r.flops for r in rows)
    lines += [f"  {'total':<24}{sum(r.params for r in rows):>14,}{total / 1e9:>12.3f}"
              f"{total / cfg.resolution**2:>12,.0f}",
              f"  activations saved for backward at batch {batch}: "
              f"{_format_bytes(activation_bytes(cfg, batch))} (fp32)",
              f"  discriminator {p.discriminator.resolution}px: {d_params:,} params"]
    return lines


def pixel_cost_table(presets: list[str]) -> list[str]:
    """Forward GFLOP per image and FLOP per output pixel of each preset's generator, one line
    each under a heading: the cost grows near-linearly with the pixels."""
    lines = ["Cost per output pixel (forward, generator): near-linear in pixels"]
    for name in presets:
        cfg = get_preset(name).generator
        total = generator_flops(cfg)
        lines.append(f"  {name:<14}{cfg.resolution:>6}px {total / 1e9:>9.2f} GFLOP/img "
                     f"{total / cfg.resolution**2:>10,.0f} FLOP/px")
    return lines
