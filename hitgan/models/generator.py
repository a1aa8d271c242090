"""HiT generator (Zhao et al., NeurIPS 2021): a convolution-free Transformer generator.

z -> Linear -> 8x8 grid, and z -> 16 latent tokens. Each stage adds a position embedding, runs a
cross-attention block on the tokens, then multi-axis blocks (low resolution) or MLP blocks (high
resolution), and pixel-shuffles up to the next stage. MLP-only stages emit RGB through SkipToRGB.

Class-conditional (``num_classes > 0``; the paper and the official code are unconditional): a
learned embedding of the label, scaled to unit second moment, is concatenated to z before the
two input projections, as StyleGAN2-ADA's mapping network concatenates its class embedding to z
(and BigGAN its shared embedding). The class so reaches the initial grid and the latent tokens
that every stage cross-attends to, through the same projections as z; an extra class token
would reach the cross-attentions only, not the initial grid. ``num_classes=0`` builds exactly
the unconditional model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from hitgan.models.attention import (
    CrossAttentionBlock,
    MultiAxisBlock,
    block_images,
    unblock_images,
)
from hitgan.models.config import GeneratorConfig
from hitgan.models.layers import (
    BatchNormLast,
    BilinearUpsample,
    Linear,
    MLPBlock,
    PixelShuffleUpsample,
    PositionEmbedding,
    SkipToRGB,
    make_norm,
)

EVAL_CHUNK_BYTES = 32 * 2**20


class HiTStage(nn.Module):
    """One resolution of the generator, channels-last (B, S, S, C) in and out."""

    def __init__(self, cfg: GeneratorConfig, i: int):
        super().__init__()
        size, dim, heads = cfg.grid_sizes[i], cfg.widths[i], cfg.heads[i]
        multi_query = cfg.attention == "multi_query"
        self.patch = cfg.patch_sizes[i]
        self.pos_embed = PositionEmbedding(size, size, dim)
        self.cross = CrossAttentionBlock(dim, heads, cfg.widths[0], cfg.norm, multi_query,
                                         cfg.mlp_ratio)
        if self.patch is None:  # high resolution: no self-attention, MLPs only
            blocks = [MLPBlock(dim, cfg.norm, cfg.mlp_ratio) for _ in range(cfg.layers[i])]
            self.to_rgb: SkipToRGB | None = SkipToRGB(dim, cfg.out_channels, cfg.norm,
                                                      smooth=cfg.upsample == "bilinear")
        else:
            blocks = [MultiAxisBlock(dim, heads, cfg.norm, multi_query, cfg.mlp_ratio)
                      for _ in range(cfg.layers[i])]
            self.to_rgb = None
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = self.cross(self.pos_embed(x), tokens)  # (B, S, S, C)
        if self.patch is None:
            for block in self.blocks:
                x = block(x)
            return x
        grid_w = x.shape[2] // self.patch
        x = block_images(x, self.patch)  # (B, G, P, C)
        for block in self.blocks:
            x = block(x)
        return unblock_images(x, grid_w, self.patch)  # (B, S, S, C)


class HiTGenerator(nn.Module):
    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = cfg = config
        w0, s0 = cfg.widths[0], cfg.initial_size
        # conditional: [z, class embedding] (B, 2 * latent_dim) feeds the input projections
        self.class_embed = (nn.Embedding(cfg.num_classes, cfg.latent_dim) if cfg.num_classes
                            else None)
        latent_in = cfg.latent_dim * (2 if cfg.num_classes else 1)
        self.to_grid = Linear(latent_in, s0 * s0 * w0)
        self.to_tokens = Linear(latent_in, cfg.latent_tokens * w0)
        self.token_pos = PositionEmbedding(cfg.latent_tokens, w0)
        self.token_norm = make_norm(cfg.norm, w0)
        self.stages = nn.ModuleList(HiTStage(cfg, i) for i in range(len(cfg.widths)))
        upsample = BilinearUpsample if cfg.upsample == "bilinear" else PixelShuffleUpsample
        self.upsamples = nn.ModuleList(upsample(cfg.widths[i], cfg.widths[i + 1])
                                       for i in range(len(cfg.widths) - 1))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, latent_dim) and, for a conditional generator, labels (B,) integer classes in
        0..num_classes-1 -> images (B, out_channels, R, R), not squashed (no tanh).

        CPU inference runs in chunks whose largest activation stays near ``EVAL_CHUNK_BYTES``:
        the high-resolution MLP stages are memory-bound, and in eval mode (BatchNorm with
        running statistics) samples are independent, so the function is unchanged. An exported
        graph (ONNX, a dynamic batch) has no chunks.
        """
        latent = self._latent(z, labels)  # (B, latent_dim), conditional: (B, 2 * latent_dim)
        if not self.training and z.device.type == "cpu" and not torch.compiler.is_exporting():
            chunk = max(1, EVAL_CHUNK_BYTES // self._activation_bytes_per_image)
            if z.shape[0] > chunk:
                return torch.cat([self._forward(c) for c in latent.split(chunk)])
        return self._forward(latent)

    def _latent(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """What the input projections read: z, or [z, embedding of the labels] (normalised to
        unit second moment, as StyleGAN2-ADA's ``normalize_2nd_moment``)."""
        k = self.config.num_classes
        if self.class_embed is None:
            if labels is not None:
                raise ValueError("labels given to an unconditional generator (num_classes=0); "
                                 "call it with z alone")
            return z
        if labels is None:
            raise ValueError(f"this generator is class-conditional ({k} classes): pass labels "
                             f"(B,) in 0..{k - 1} with z")
        if labels.shape != z.shape[:1]:
            raise ValueError(f"labels of shape {tuple(labels.shape)}: give one per latent, "
                             f"shape ({z.shape[0]},)")
        tracing = torch.compiler.is_compiling() or torch.compiler.is_exporting()
        if not tracing and labels.numel() and (
                int(labels.min()) < 0 or int(labels.max()) >= k):
            raise ValueError(f"labels {labels.unique().tolist()[:8]}: classes are 0..{k - 1}")
        e = F.normalize(self.class_embed(labels).to(z.dtype), dim=1) * z.shape[1] ** 0.5
        return torch.cat((z, e), dim=1)  # (B, 2 * latent_dim)

    @property
    def _activation_bytes_per_image(self) -> int:
        cfg = self.config  # the widest tensor: an MLP hidden layer, in fp32
        return max(s * s * w * cfg.mlp_ratio * 4 for s, w in zip(cfg.grid_sizes, cfg.widths,
                                                                  strict=True))

    def _forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_dim) or [z, class embedding] (B, 2 * latent_dim) -> images."""
        b, cfg = z.shape[0], self.config
        # 1. input: the initial grid (NHWC, row-major as the official reshape) and latent tokens
        x = self.to_grid(z).view(b, cfg.initial_size, cfg.initial_size, cfg.widths[0])
        tokens = self.to_tokens(z).view(b, cfg.latent_tokens, cfg.widths[0])  # (B, T, C0)
        tokens = self.token_norm(self.token_pos(tokens))
        # 2. stages, upsampling between them; MLP-only stages accumulate the image
        image = None
        for i, stage in enumerate(self.stages):
            x = stage(x, tokens)  # (B, S, S, C_i)
            if stage.to_rgb is not None:
                image = stage.to_rgb(x, image)  # (B, S, S, out)
            if i < len(self.upsamples):
                x = self.upsamples[i](x)  # (B, 2S, 2S, C_{i+1})
        # 3. output as NCHW (a channels-last view, no copy)
        assert image is not None
        return image.permute(0, 3, 1, 2)

    @torch.no_grad()
    def recalibrate_batchnorm(self, batches: int = 4, batch_size: int = 32, seed: int = 0
                              ) -> HiTGenerator:
        """Set BatchNorm running statistics to their exact average over ``batches`` batches of
        random latents with the current weights (as SWA's ``update_bn``).

        The official code samples with the moving averages kept during training; early in a
        run, or with fast-changing weights, those lag behind and eval-mode samples wash out.
        The statistics depend on ``seed`` alone, so this is local work: synchronised BatchNorm
        does not all-reduce here (every process that calls it gets the same numbers, and one
        process may call it alone, as the trainer's main process does for its sample grids).
        """
        norms = [m for m in self.modules() if isinstance(m, BatchNormLast)]
        if not norms or batches < 1:
            return self
        momenta = [m.bn.momentum for m in norms]
        gen = torch.Generator().manual_seed(seed)
        device = next(self.parameters()).device
        with self._local_training_mode():
            try:
                for m in norms:
                    m.bn.reset_running_stats()
                    m.bn.momentum = None  # cumulative average
                for _ in range(batches):
                    z = torch.randn(batch_size, self.config.latent_dim, generator=gen)
                    self(z.to(device), self.random_labels(batch_size, gen, device))
            finally:
                for m, momentum in zip(norms, momenta, strict=True):
                    m.bn.momentum = momentum
        return self

    def random_labels(self, n: int, gen: torch.Generator, device: torch.device | str = "cpu"
                      ) -> torch.Tensor | None:
        """(n,) uniform random classes drawn from ``gen``; None if unconditional (and then
        ``gen`` is not used, so unconditional random streams are as before)."""
        if not self.config.num_classes:
            return None
        return torch.randint(self.config.num_classes, (n,), generator=gen).to(device)

    @contextmanager
    def _local_training_mode(self) -> Iterator[None]:
        """Training mode with synchronised BatchNorm off (local work, no collective); the
        previous mode and sync settings come back after."""
        norms = [m for m in self.modules() if isinstance(m, BatchNormLast)]
        was_training, syncs = self.training, [m.sync for m in norms]
        for m in norms:
            m.sync = False
        self.train()
        try:
            yield
        finally:
            for m, sync in zip(norms, syncs, strict=True):
                m.sync = sync
            self.train(was_training)

    @torch.no_grad()
    def match_output_statistics(self, mean: torch.Tensor, std: torch.Tensor,
                                batch_size: int = 256, seed: int = 0) -> HiTGenerator:
        """Data-dependent initialisation of the output (Glow's ActNorm, applied once).

        With the official truncated-normal(0.02) init the image starts near grey with a
        standard deviation of about 0.05; Adam then needs on the order of 1 / lr steps to grow
        each channel's offset and scale to the data's (MNIST: mean -0.8, std 0.55), which is
        most of a short run. This rescales every SkipToRGB projection by ``std / current std``
        (the image is linear in them, so the whole image scales) and shifts the last one's bias,
        so that for one batch of random latents in training mode each output channel has
        ``mean`` and ``std`` (per channel, shape (out_channels,)). BatchNorm statistics are
        left as they were; like ``recalibrate_batchnorm`` this is local work (no collective).
        """
        rgbs = [stage.to_rgb for stage in self.stages if stage.to_rgb is not None]
        device = next(self.parameters()).device
        saved = [b.clone() for b in self.buffers()]
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(batch_size, self.config.latent_dim, generator=gen).to(device)
        with self._local_training_mode():
            out = self(z, self.random_labels(batch_size, gen, device))  # (B, out, R, R)
        for b, s in zip(self.buffers(), saved, strict=True):
            b.copy_(s)
        gain = std.to(out) / out.std((0, 2, 3)).clamp_min(1e-8)  # (out,)
        for rgb in rgbs:
            rgb.proj.weight.mul_(gain[:, None])
            rgb.proj.bias.mul_(gain)
        rgbs[-1].proj.bias.add_(mean.to(out) - gain * out.mean((0, 2, 3)))
        return self
