"""Complexity evidence: generator FLOPs and time per output pixel from 32 to 1024 px, HiT against
a same-width baseline with global self-attention at every stage.

Run it on an otherwise idle machine so nothing else competes for the cores::

    python -m bench.complexity --json bench-complexity.json --plot docs/complexity.png

**The HiT family.** One member per output size R, differing only in the number of stages: the
official hit-b-1024 layout (widths, layers, heads, patch sizes per stage) cut to its first
log2(R/8) + 1 stages, so a stage at a given grid size has the same width, depth and heads in
every member, and the 1024 px member is hit-b-1024 itself. The official tables decide attention
per stage explicitly: multi-axis attention on the 8..64 grids, MLP-only stages from 128 up, and
the image is emitted only by MLP-only stages (SkipToRGB). Cutting hit-b-1024 keeps that rule from
128 px up; at 32 and 64 px the cut would leave no MLP-only stage, so there (and only there) the
last stage is made MLP-only, as the hit-tiny-32 and hit-small-64 presets do.

**The baseline.** The same configs, with every block after each stage's cross-attention replaced
by global multi-query self-attention over all S*S positions followed by the MLP, in every stage,
the MLP-only ones included. It is assembled from hitgan's own blocks: ``CrossAttention`` with
the stage's own grid as the context is exactly global self-attention (queries from every
position, one shared key/value head from every position, ``F.scaled_dot_product_attention``).
Input projections, cross-attention, upsampling and SkipToRGB are HiT's, unchanged.

**What is measured.** FLOPs per image are counted by ``torch.utils.flop_counter.FlopCounterMode``
on the ``meta`` device (nothing computed or allocated; SDPA included), so they are reported for
every size. Time is an eval-mode forward at batch 1 (median of the timed repeats after one
warm-up forward); memory is the process's peak resident set during those forwards. A size is
not run when the forward's predicted time (its FLOPs at the GFLOP/s the same model reached at its
last measured size) exceeds ``--max-seconds``, or its predicted peak memory (that size's peak
times the pixel ratio) exceeds the memory available; the row then says why and gives the prediction.
SDPA on CPU is flash-style (it never holds the S^2 x S^2 score matrix), so for the baseline the
limit is time, not memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.common import (
    add_machine_options,
    check_machine_options,
    describe,
    fail,
    markdown_table,
    matmul_peaks,
    peak_memory_bytes,
    proc_kb_field,
    release_memory,
    reset_peak_memory,
    resident_bytes,
    start_run,
    timed,
)
from hitgan.models.attention import CrossAttention, CrossAttentionBlock
from hitgan.models.config import PRESETS, GeneratorConfig
from hitgan.models.generator import HiTGenerator
from hitgan.models.layers import MLPBlock, PositionEmbedding, SkipToRGB, make_norm

BASE_PRESET = "hit-b-1024"  # the layout every family member is cut from
RESOLUTIONS = (32, 64, 128, 256, 512, 1024)
HIT, GLOBAL = "HiT", "global attention"
REPEAT_BUDGET_S = 30.0  # timed repeats are cut so that one size of one model takes about this
MIB = 2**20


def family_config(resolution: int) -> GeneratorConfig:
    """The HiT family member of output size ``resolution``: hit-b-1024's first stages."""
    base = PRESETS[BASE_PRESET].generator
    sizes = base.grid_sizes
    if resolution not in sizes[1:]:
        raise ValueError(f"resolution={resolution}: use one of {sizes[1:]} (grid sizes of "
                         f"{BASE_PRESET} after the first stage)")
    n = sizes.index(resolution) + 1
    patches = (*base.patch_sizes[:n - 1], None)  # the output stage is MLP-only (SkipToRGB)
    return dataclasses.replace(base, resolution=resolution, layers=base.layers[:n],
                               widths=base.widths[:n], heads=base.heads[:n],
                               patch_sizes=patches)


class GlobalAttentionBlock(nn.Module):
    """x + global multi-query self-attention(norm(x)) over all S*S positions, then an MLP block;
    channels-last (B, S, S, C) in and out."""

    def __init__(self, dim: int, heads: int, norm: str, multi_query: bool, mlp_ratio: int):
        super().__init__()
        self.norm = make_norm(norm, dim)
        self.attn = CrossAttention(dim, heads, dim, multi_query)  # context = the grid itself
        self.mlp = MLPBlock(dim, norm, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)  # (B, S, S, C)
        return self.mlp(x + self.attn(h, h.flatten(1, 2)))  # keys/values (B, S*S, C)


class GlobalAttentionStage(nn.Module):
    """HiTStage with global self-attention blocks in place of multi-axis or MLP-only blocks."""

    def __init__(self, cfg: GeneratorConfig, i: int):
        super().__init__()
        size, dim, heads = cfg.grid_sizes[i], cfg.widths[i], cfg.heads[i]
        multi_query = cfg.attention == "multi_query"
        self.pos_embed = PositionEmbedding(size, size, dim)
        self.cross = CrossAttentionBlock(dim, heads, cfg.widths[0], cfg.norm, multi_query,
                                         cfg.mlp_ratio)
        self.blocks = nn.ModuleList(
            GlobalAttentionBlock(dim, heads, cfg.norm, multi_query, cfg.mlp_ratio)
            for _ in range(cfg.layers[i]))
        # the image comes from the same stages as in HiT
        self.to_rgb = (SkipToRGB(dim, cfg.out_channels, cfg.norm)
                       if cfg.patch_sizes[i] is None else None)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = self.cross(self.pos_embed(x), tokens)  # (B, S, S, C)
        for block in self.blocks:
            x = block(x)
        return x


class GlobalAttentionGenerator(HiTGenerator):
    """HiTGenerator whose stages are GlobalAttentionStage; input, upsampling and output as HiT's."""

    def __init__(self, config: GeneratorConfig):
        super().__init__(config)
        self.stages = nn.ModuleList(GlobalAttentionStage(config, i)
                                    for i in range(len(config.widths)))


MODELS: dict[str, type[HiTGenerator]] = {HIT: HiTGenerator, GLOBAL: GlobalAttentionGenerator}


def counted_flops(model_cls: type[HiTGenerator], cfg: GeneratorConfig) -> tuple[int, int]:
    """(forward FLOPs per image, parameters), counted on the meta device."""
    with torch.device("meta"):
        model = model_cls(cfg).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, cfg.latent_dim, device="meta"))
    return counter.get_total_flops(), sum(p.numel() for p in model.parameters())


@dataclass
class Row:
    resolution: int
    model: str  # "HiT" or "global attention"
    params: int
    flops: int  # forward FLOPs per image (FlopCounterMode)
    flops_per_pixel: float
    seconds: float | None  # median seconds per forward at batch 1; None when not run
    ns_per_pixel: float | None
    samples: int  # timed forwards behind the median
    peak_mib: float | None  # process peak resident set during the forwards
    predicted_seconds: float | None = None  # for rows not run: FLOPs / previous GFLOP/s
    note: str = ""

    @property
    def gflops_per_s(self) -> float | None:
        return None if self.seconds is None else self.flops / self.seconds / 1e9



def _measure(model_cls: type[HiTGenerator], cfg: GeneratorConfig, repeats: int, bf16: bool
             ) -> tuple[float, int, int | None]:
    """(median seconds per forward, timed forwards, peak RSS bytes) of an eval-mode forward at
    batch 1, after one warm-up forward."""
    torch.manual_seed(0)
    model = model_cls(cfg).eval()
    z = torch.randn(1, cfg.latent_dim)

    def forward() -> None:
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            model(z)

    release_memory()  # drop the initialisers' temporaries before the peak starts
    reset_peak_memory()
    ((warm, _),) = timed(forward, 1)
    n = max(1, min(repeats, int(REPEAT_BUDGET_S / warm)))
    seconds = statistics.median(w for w, _ in timed(forward, n))
    return seconds, n, peak_memory_bytes()


def _skip_reason(resolution: int, flops: int, previous: Row | None, max_seconds: float,
                 available: int | None) -> tuple[float | None, str]:
    """(predicted seconds, why not to run) from the same model's last measured size: time
    scales with FLOPs, peak memory with pixels. "" = run."""
    if previous is None or previous.seconds is None:
        return None, ""
    predicted = previous.seconds * flops / previous.flops
    if predicted > max_seconds:
        return predicted, (f"not run: predicted {predicted:,.0f} s per forward "
                           f"> --max-seconds {max_seconds:g}")
    if previous.peak_mib is not None and available is not None:
        memory = previous.peak_mib * MIB * (resolution / previous.resolution) ** 2
        if memory > available:
            return predicted, (f"not run: predicted {memory / 2**30:.1f} GiB > "
                               f"{available / 2**30:.1f} GiB available")
    return predicted, ""


def bench_size(resolution: int, model: str, previous: Row | None, args: argparse.Namespace,
               available: int | None) -> Row:
    cfg = family_config(resolution)
    flops, params = counted_flops(MODELS[model], cfg)
    pixels = resolution * resolution
    predicted, reason = _skip_reason(resolution, flops, previous, args.max_seconds, available)
    if reason:
        return Row(resolution, model, params, flops, flops / pixels, None, None, 0, None,
                   predicted, reason)
    print(f"{resolution} px {model}: running ({len(cfg.widths)} stages)", file=sys.stderr,
          flush=True)
    seconds, samples, peak = _measure(MODELS[model], cfg, args.repeats, args.dtype == "bf16")
    release_memory()  # the model is gone; keep its memory out of the next peak
    return Row(resolution, model, params, flops, flops / pixels, seconds, seconds / pixels * 1e9,
               samples, None if peak is None else peak / MIB)


def format_table(rows: list[Row]) -> str:
    header = ["resolution", "model", "params (M)", "GFLOP/img", "FLOPs/pixel", "ms/forward",
              "ns/pixel", "GFLOP/s", "peak RSS MiB", "samples", "note"]

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    return markdown_table(header, [
        [r.resolution, r.model, f"{r.params / 1e6:.1f}", f"{r.flops / 1e9:.2f}",
         f"{r.flops_per_pixel:,.0f}", fmt(None if r.seconds is None else r.seconds * 1e3, ".1f"),
         fmt(r.ns_per_pixel, ".0f"), fmt(r.gflops_per_s, ".1f"), fmt(r.peak_mib, ".0f"),
         r.samples, r.note] for r in rows])


def _row(rows: list[Row], model: str, resolution: int) -> Row | None:
    return next((r for r in rows if r.model == model and r.resolution == resolution), None)


def ratios(rows: list[Row]) -> list[str]:
    """Time and FLOPs per pixel at 1024 px over 128 px, per model, where both exist."""
    out = []
    for model in MODELS:
        low, high = _row(rows, model, 128), _row(rows, model, 1024)
        if low is None or high is None:
            continue
        flops = high.flops_per_pixel / low.flops_per_pixel
        if low.ns_per_pixel is not None and high.ns_per_pixel is not None:
            out.append(f"{model}: time/pixel at 1024 / at 128 = "
                       f"{high.ns_per_pixel / low.ns_per_pixel:.2f}; FLOPs/pixel {flops:.2f}")
        else:
            out.append(f"{model}: FLOPs/pixel at 1024 / at 128 = {flops:.2f} (time: not run)")
    return out


def plot(rows: list[Row], path: str, info: dict[str, object], dtype: str) -> None:
    """Time per pixel (measured, and predicted where not run) and FLOPs per pixel vs size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_f) = plt.subplots(1, 2, figsize=(12, 4.8))
    for model, color in zip(MODELS, ("tab:blue", "tab:red"), strict=True):
        mine = [r for r in rows if r.model == model]
        run = [r for r in mine if r.ns_per_pixel is not None]
        ax_t.plot([r.resolution for r in run], [r.ns_per_pixel for r in run], "o-", color=color,
                  label=f"{model} (measured)")
        guessed = [r for r in mine if r.seconds is None and r.predicted_seconds is not None]
        if guessed:
            line = run[-1:] if run else []
            xs = [r.resolution for r in line + guessed]
            ys = ([r.ns_per_pixel for r in line]
                  + [r.predicted_seconds / r.resolution**2 * 1e9 for r in guessed])
            ax_t.plot(xs, ys, "--", color=color)
            ax_t.plot(xs[len(line):], ys[len(line):], "o", mfc="none", color=color,
                      label=f"{model} (predicted, not run)")
            for r, y in zip(guessed, ys[len(line):], strict=True):
                ax_t.annotate(f"not run: predicted\n{r.predicted_seconds:,.0f} s/forward",
                              (r.resolution, y), textcoords="offset points", xytext=(-12, 0),
                              ha="right", va="center", fontsize=8, color=color)
        ax_f.plot([r.resolution for r in mine], [r.flops_per_pixel for r in mine], "o-",
                  color=color, label=model)
    sizes = sorted({r.resolution for r in rows})
    for ax in (ax_t, ax_f):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("output resolution (px)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax_t.set_ylabel("forward time per output pixel (ns)")
    ax_t.set_title(f"Time per pixel (eval forward, batch 1, {dtype})")
    ax_f.set_ylabel("forward FLOPs per output pixel")
    ax_f.set_title("FLOPs per pixel (FlopCounterMode)")
    fig.suptitle(f"HiT generator ({BASE_PRESET} family) vs same-width global self-attention\n"
                 f"{info['cpu']}, torch {info['torch']}, {info['torch_threads']} threads",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.complexity",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolutions", default=",".join(map(str, RESOLUTIONS)),
                   help="comma-separated output sizes, powers of two from 16 to 1024")
    p.add_argument("--repeats", type=int, default=5,
                   help=f"timed forwards per size (fewer where they exceed ~{REPEAT_BUDGET_S:g} s)")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="do not run a forward predicted to take longer than this")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="fp32, or bf16 autocast")
    add_machine_options(p, device=False)
    p.add_argument("--json", help="also write the rows and machine info here")
    p.add_argument("--plot", help="write the PNG plot here (needs matplotlib)")
    args = p.parse_args(argv)
    check_machine_options(p, args, ("repeats",))
    if not args.max_seconds > 0:
        p.error("--max-seconds must be > 0")
    try:
        args.resolutions = sorted({int(s) for s in args.resolutions.split(",")})
        for r in args.resolutions:
            family_config(r)
    except ValueError as e:
        p.error(f"--resolutions: {e}")
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    """Run the benchmark, print the table and ratios; returns the rows."""
    args = parse_args(argv)
    info = start_run(malloc_cache=not args.no_malloc_cache)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            fail("--plot needs matplotlib (pip install -e '.[dev]')")
    peaks = matmul_peaks(args.matmul_size)
    release_memory()
    idle = resident_bytes()
    available = proc_kb_field("/proc/meminfo", "MemAvailable")
    rows: list[Row] = []
    for resolution in args.resolutions:
        for model in MODELS:
            previous = next((r for r in reversed(rows)
                             if r.model == model and r.seconds is not None), None)
            rows.append(bench_size(resolution, model, previous, args, available))
    print(describe(info))
    print(f"dense matmul {args.matmul_size}^2: fp32 {peaks['fp32']:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s")
    print(f"eval forward at batch 1, {args.dtype}; process RSS before any model: "
          f"{'-' if idle is None else f'{idle / MIB:.0f} MiB'}\n")
    print(format_table(rows))
    lines = ratios(rows)
    if lines:
        print("\n" + "\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": info, "matmul_gflops": peaks,
             "argv": sys.argv[1:] if argv is None else argv, "dtype": args.dtype,
             "idle_rss_mib": None if idle is None else idle / MIB,
             "configs": {r: family_config(r).to_dict() for r in args.resolutions},
             "rows": [asdict(r) | {"gflops_per_s": r.gflops_per_s} for r in rows]}, indent=2))
    if args.plot:
        plot(rows, args.plot, info, args.dtype)
    return rows


if __name__ == "__main__":
    main()
