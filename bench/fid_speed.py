"""The FID feature extractors side by side: the TorchScript reference, the fast extractor run
eagerly, and the fast extractor compiled, on the same real images in one process.

    python -m bench.fid_speed --images 1024 --batch 16 --rounds 4

Each round gives every extractor the next slice of the images (uint8, as ``hitgan stats``
feeds them), in the same order of extractors, so all see the same images under the same load;
images/s is the median over rounds, with the process's CPU time per wall second (2.0 on two
idle cores with 2 threads; lower means other processes took a core). The compiled extractor's
first call (inductor compiling it, or reading its cache) is timed apart and not in the rounds.
Every extractor's features of all images are compared with the reference's: the max abs
difference, also relative to the feature scale (the RMS of the reference's features), and the
FID of the even-indexed images against the odd-indexed ones through each. GFLOP/s use the
network's FLOPs counted by torch (convolutions) and are set against the dense-matmul peak
measured in the same run; that peak over the reference's GFLOP/s is the most any extractor that
does the same arithmetic can gain over it here (the ``ceiling``). The multiply-adds by kernel
shape say what a fast convolution algorithm (Winograd, FFT) could remove. Run it on an
otherwise idle machine; the CPU/wall column shows whether it was. Results: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import (
    add_machine_options,
    check_machine_options,
    describe,
    markdown_table,
    matmul_peak,
    start_run,
    timed,
)
from hitgan.data.dataset import BUILTIN, ImageDataset, Preprocess
from hitgan.metrics.features import INCEPTION_SIZE, InceptionExtractor, quantize
from hitgan.metrics.fid import fid_from_features
from hitgan.metrics.inception import ConvReLU

CANDIDATES = {"reference": ("reference", False), "fast": ("fast", False),
              "fast+compile": ("fast", True)}


@dataclass
class Row:
    extractor: str
    images_per_s: float  # median over rounds
    cpu_per_wall: float  # about 2.0 on 2 cores when nothing else runs
    first_call_s: float  # the first batch: compilation (or its cache) for fast+compile
    max_abs_difference: float  # to the reference's features, over all images
    relative_difference: float  # max_abs_difference / RMS of the reference's features
    fid_even_odd: float | None  # even-indexed images against odd-indexed ones (not --no-fid)
    gflops: float


def network_flops(net: torch.nn.Module) -> int:
    """FLOPs of one 299x299 image through the network (convolutions, as torch counts them)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE, device=next(net.parameters()).device))
    return counter.get_total_flops()


def macs_by_kernel(net: torch.nn.Module) -> dict[str, int]:
    """Multiply-adds of one 299x299 image through the fast network's convolutions, by kernel
    shape and stride (``"3x3/1"``), largest first."""
    macs: dict[str, int] = {}

    def count(conv: ConvReLU, _: tuple, out: torch.Tensor) -> None:
        c_in, kh, kw = conv.weight.shape[1:]
        stride = conv.stride if isinstance(conv.stride, int) else conv.stride[0]
        key = f"{kh}x{kw}/{stride}"
        macs[key] = macs.get(key, 0) + out[0].numel() * c_in * kh * kw

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, ConvReLU)]
    try:
        with torch.inference_mode():
            net(torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE,
                            device=next(net.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return dict(sorted(macs.items(), key=lambda kv: -kv[1]))


def fid_text(fid: float | None, reference: float | None = None) -> str:
    """``12.3456``, or its difference to the reference's ``+0.00012``; ``-`` when skipped."""
    if fid is None or reference is None:
        return "-" if fid is None else f"{fid:.4f}"
    return f"{fid - reference:+.5f}"


def main(argv: list[str] | None = None) -> list[Row]:
    p = argparse.ArgumentParser(prog="python -m bench.fid_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="mnist", help=f"a folder, a .zip, or one of {BUILTIN}")
    p.add_argument("--resolution", type=int, default=32, help="images are decoded at this size")
    p.add_argument("--images", type=int, default=1024, help="real images, split over rounds")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--extractors", default=",".join(CANDIDATES),
                   help=f"comma-separated, of {list(CANDIDATES)}; reference always runs")
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads for all (default: torch's, one per core)")
    p.add_argument("--no-fid", action="store_true",
                   help="skip the FIDs (two 2048x2048 eigh and an SVD each: slow on 2 cores)")
    p.add_argument("--json", help="also write the rows and machine info here")
    add_machine_options(p)
    args = p.parse_args(argv)
    check_machine_options(p, args, ("images", "batch", "rounds", "resolution"))
    names = ["reference", *(n.strip() for n in args.extractors.split(",")
                            if n.strip() not in ("", "reference"))]
    if unknown := [n for n in names if n not in CANDIDATES]:
        p.error(f"--extractors: unknown {unknown}; choose from {list(CANDIDATES)}")
    if args.images % (2 * args.rounds):
        p.error(f"--images {args.images}: must be a multiple of 2 x --rounds ({args.rounds})")
    if args.threads:
        torch.set_num_threads(args.threads)
    info = start_run(args.device, not args.no_malloc_cache)
    data = ImageDataset(args.data, Preprocess(args.resolution))
    if len(data) < args.images:
        p.error(f"--images {args.images}: {args.data} has {len(data)}")
    images = quantize(torch.stack([data[i] for i in range(args.images)]))  # (N, 3, R, R)
    extractors = {n: InceptionExtractor(kind=CANDIDATES[n][0], compile=CANDIDATES[n][1])
                  .to(args.device) for n in names}
    first = {}
    for name, ex in extractors.items():
        first[name] = timed(lambda ex=ex: ex(images[:args.batch].to(args.device)), 1,
                            args.device)[0][0]
    per_round = args.images // args.rounds
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    feats: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for r in range(args.rounds):
        part = images[r * per_round:(r + 1) * per_round].to(args.device)
        for name, ex in extractors.items():
            out = []
            times[name] += timed(lambda ex=ex, out=out, part=part: out.extend(
                ex(b) for b in part.split(args.batch)), 1, args.device)
            feats[name].append(torch.cat(out).cpu())
    fast_net = next((ex.net for ex in extractors.values() if ex.kind == "fast"), None)
    if fast_net is None:  # its convolutions (ConvReLU) are what macs_by_kernel counts
        fast_net = InceptionExtractor(kind="fast").net.to(args.device)
    flops = network_flops(fast_net)
    macs = macs_by_kernel(fast_net)
    peak = matmul_peak(args.matmul_size, torch.float32, args.device)
    ref = torch.cat(feats["reference"]).double()
    scale = ref.pow(2).mean().sqrt().item()
    rows = []
    for name in names:
        f = torch.cat(feats[name]).double()
        speed = per_round / statistics.median(t for t, _ in times[name])
        diff = (f - ref).abs().max().item()
        fid = None if args.no_fid else fid_from_features(f[0::2].numpy(), f[1::2].numpy())
        rows.append(Row(name, speed, statistics.median(c for _, c in times[name]), first[name],
                        diff, diff / scale, fid, speed * flops / 1e9))
    print(describe(info))
    print(f"{args.images} images of {args.data} at {args.resolution}px, batch {args.batch}, "
          f"{args.rounds} rounds; network {flops / 1e9:.2f} GFLOP/img; fp32 matmul peak "
          f"{peak:.0f} GFLOP/s; feature scale (RMS) {scale:.4f}")
    ref_row = rows[0]
    print(markdown_table(
        ["extractor", "img/s", "/ reference", "CPU/wall", "first call s", "max abs diff",
         "/ scale", f"FID {args.images // 2} even vs odd", "FID - reference's", "GFLOP/s",
         "% of matmul peak"],
        [[r.extractor, f"{r.images_per_s:.2f}", f"{r.images_per_s / ref_row.images_per_s:.2f}x",
          f"{r.cpu_per_wall:.2f}", f"{r.first_call_s:.1f}", f"{r.max_abs_difference:.2e}",
          f"{r.relative_difference:.2e}", fid_text(r.fid_even_odd),
          fid_text(r.fid_even_odd, ref_row.fid_even_odd), f"{r.gflops:.1f}",
          f"{100 * r.gflops / peak:.0f}%"] for r in rows]))
    total = sum(macs.values())
    print("multiply-adds by kernel/stride: " + ", ".join(
        f"{k} {v / 1e9:.3f} G ({100 * v / total:.1f}%)" for k, v in macs.items()))
    if ref_row.extractor == "reference":
        print(f"ceiling: the fp32 matmul peak is {peak / ref_row.gflops:.2f}x the reference's "
              "GFLOP/s, the most that the same arithmetic can gain here")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": info, "args": vars(args), "gflop_per_image": flops / 1e9,
             "matmul_peak_gflops": peak, "feature_scale": scale, "macs_by_kernel": macs,
             "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
