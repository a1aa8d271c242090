"""Patch blocking, multi-axis blocked self-attention and latent cross-attention (HiT, Sec. 3).

Layout: a stage's grid (B, H, W, C) is blocked into (B, G, P, C): G = (H/p)(W/p) patches of
P = p*p pixels, in TF ``space_to_depth`` order. Attention runs through
``F.scaled_dot_product_attention``; multi-query attention passes its single K/V head with
``enable_gqa`` so it is shared by all query heads without being copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hitgan.models.layers import Linear, MLPBlock, make_norm


def block_images(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, G, P, C); inverse of :func:`unblock_images`."""
    b, h, w, c = x.shape
    assert h % patch == 0 and w % patch == 0, f"grid {h}x{w} not divisible by patch {patch}"
    x = x.view(b, h // patch, patch, w // patch, patch, c).transpose(2, 3)  # (B, gh, gw, p, p, C)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch, c)


def unblock_images(x: torch.Tensor, grid_w: int, patch: int) -> torch.Tensor:
    """(B, G, P, C) -> (B, H, W, C) with ``grid_w`` patches per row; inverse of block_images."""
    b, g, p2, c = x.shape
    assert p2 == patch * patch and g % grid_w == 0, (x.shape, grid_w, patch)
    grid_h = g // grid_w
    x = x.view(b, grid_h, grid_w, patch, patch, c).transpose(2, 3)  # (B, gh, p, gw, p, C)
    return x.reshape(b, grid_h * patch, grid_w * patch, c)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SDPA with scale 1/sqrt(head_dim); k, v may have fewer heads (1 = multi-query)."""
    return F.scaled_dot_product_attention(q, k, v, enable_gqa=k.shape[-3] != q.shape[-3])


class _Attention(nn.Module):
    """Query/key/value/output projections shared by both attention kinds.

    Official layout: query and output projections per head (key_dim = dim // heads); keys and
    values with ``heads`` heads (multi_head) or one shared head (multi_query).
    """

    def __init__(self, dim: int, heads: int, context_dim: int, multi_query: bool):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.kv_heads = 1 if multi_query else heads
        self.to_q = Linear(dim, heads * self.head_dim)
        self.to_kv = Linear(context_dim, 2 * self.kv_heads * self.head_dim)
        self.to_out = Linear(heads * self.head_dim, dim)

    def _kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kv = self.to_kv(context).unflatten(-1, (2, self.kv_heads, self.head_dim))
        return kv[..., 0, :, :], kv[..., 1, :, :]  # each (..., kv_heads, d)


class MultiAxisAttention(_Attention):
    """Blocked self-attention: the first half of the heads attends within a patch (local), the
    second half across patches at the same offset (dilated). A single multi-query K/V head serves
    both halves."""

    def __init__(self, dim: int, heads: int, multi_query: bool = True):
        assert heads % 2 == 0, "multi-axis attention splits the heads in two halves"
        super().__init__(dim, heads, dim, multi_query)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, g, p, c = x.shape  # (B, G, P, C)
        q = self.to_q(x).view(b, g, p, self.heads, self.head_dim)  # (B, G, P, h, d)
        k, v = self._kv(x)  # (B, G, P, kvh, d)
        half = self.heads // 2
        ql, qd = q.split(half, dim=3)
        (kl, kd), (vl, vd) = (_halves(t) for t in (k, v))

        # local: attend over P inside each patch -> (B*G, h/2, P, d)
        def local(t: torch.Tensor) -> torch.Tensor:
            return t.permute(0, 1, 3, 2, 4).reshape(b * g, -1, p, self.head_dim)

        # dilated: attend over G at each in-patch offset -> (B*P, h/2, G, d)
        def dilated(t: torch.Tensor) -> torch.Tensor:
            return t.permute(0, 2, 3, 1, 4).reshape(b * p, -1, g, self.head_dim)

        out_l = _attend(local(ql), local(kl), local(vl)).view(b, g, half, p, self.head_dim)
        out_d = _attend(dilated(qd), dilated(kd), dilated(vd)).view(b, p, half, g, self.head_dim)
        out = torch.cat((out_l.permute(0, 1, 3, 2, 4), out_d.permute(0, 3, 1, 2, 4)), dim=3)
        return self.to_out(out.view(b, g, p, c))  # (B, G, P, h, d) -> (B, G, P, C)


def _halves(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split K/V heads between the local and dilated halves; one shared head serves both."""
    if t.shape[-2] == 1:
        return t, t
    first, second = t.chunk(2, dim=-2)
    return first, second


class CrossAttention(_Attention):
    """Every grid position attends to all latent tokens (the paper's self-modulation)."""

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[-1]  # x (B, ..., C), tokens (B, T, C_tok)
        q = self.to_q(x).view(b, -1, self.heads, self.head_dim).transpose(1, 2)  # (B, h, N, d)
        k, v = (t.transpose(1, 2) for t in self._kv(tokens))  # (B, kvh, T, d)
        out = _attend(q, k, v).transpose(1, 2)  # (B, N, h, d)
        return self.to_out(out.reshape(*x.shape[:-1], c))


class MultiAxisBlock(nn.Module):
    """x + MultiAxisAttention(norm(x)), then an MLP block; on blocked (B, G, P, C)."""

    def __init__(self, dim: int, heads: int, norm: str, multi_query: bool, mlp_ratio: int = 4):
        super().__init__()
        self.norm = make_norm(norm, dim)
        self.attn = MultiAxisAttention(dim, heads, multi_query)
        self.mlp = MLPBlock(dim, norm, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x + self.attn(self.norm(x)))


class CrossAttentionBlock(nn.Module):
    """x + CrossAttention(norm(x), tokens), then an MLP block. Tokens are not normalised here."""

    def __init__(self, dim: int, heads: int, token_dim: int, norm: str, multi_query: bool,
                 mlp_ratio: int = 4):
        super().__init__()
        self.norm = make_norm(norm, dim)
        self.attn = CrossAttention(dim, heads, token_dim, multi_query)
        self.mlp = MLPBlock(dim, norm, mlp_ratio)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(x + self.attn(self.norm(x), tokens))
