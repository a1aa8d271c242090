"""The generator through onnxruntime against PyTorch on the CPU: img/s side by side, and the max
abs difference of their images.

    python -m bench.onnx_speed --preset hit-b-128 --batches 1,8

The model is the preset, randomly initialised, with its to-RGB projections scaled so the
images have a standard deviation of 0.5, as a trained model's roughly do (a fresh generator's
are about 0.002, which would make any difference look small). The file is written by
``hitgan.export.export_onnx``, as ``hitgan export`` writes it. PyTorch runs the eval forward in
fp32 under ``torch.inference_mode``, with the allocator setting of the ``hitgan`` command;
onnxruntime runs its CPU provider. Both use a thread per core unless --threads says otherwise.
Rounds alternate PyTorch and onnxruntime; medians are reported, with the process's CPU time per
wall second (2.0 on two idle cores with 2 threads; lower means other processes took a core).
Run it on an otherwise idle machine, or with --threads no larger than the free cores.
Results: docs/serving.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from bench.common import describe, markdown_table, start_run, timed
from hitgan.export import export_onnx, max_difference, onnx_session
from hitgan.models.config import get_preset
from hitgan.models.generator import HiTGenerator

OUTPUT_STD = 0.5


@dataclass
class Row:
    preset: str
    batch: int
    torch_images_per_s: float
    onnx_images_per_s: float
    torch_cpu_per_wall: float  # about 2.0 on 2 cores when nothing else runs
    onnx_cpu_per_wall: float
    max_abs_difference: float


def trained_scale_generator(preset: str) -> HiTGenerator:
    """Seeded random init, to-RGB weights scaled to images of std ``OUTPUT_STD``."""
    torch.manual_seed(0)
    G = HiTGenerator(get_preset(preset).generator).eval()
    with torch.inference_mode():
        std = G(torch.randn(4, G.config.latent_dim)).std().item()
    with torch.no_grad():
        for stage in G.stages:
            if stage.to_rgb is not None:
                stage.to_rgb.proj.weight.mul_(OUTPUT_STD / std)
    return G


def main(argv: list[str] | None = None) -> list[Row]:
    p = argparse.ArgumentParser(prog="python -m bench.onnx_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="hit-b-128")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--repeats", type=int, default=3, help="timed forwards per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating PyTorch/onnxruntime rounds")
    p.add_argument("--threads", type=int, default=0,
                   help="threads of each, torch.set_num_threads and onnxruntime's per operator "
                   "(default: each its own default, one per core)")
    p.add_argument("--json", help="also write the rows and machine info here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = start_run()
    G = trained_scale_generator(args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        path = export_onnx(G, Path(tmp) / "g.onnx")
        export_s = time.perf_counter() - t
        session = onnx_session(path, args.threads)
        rows = []
        for batch in (int(b) for b in args.batches.split(",")):
            z = torch.randn(batch, G.config.latent_dim, generator=torch.Generator().manual_seed(1))
            feed = {"z": z.numpy()}

            def run_torch(z: torch.Tensor = z) -> None:
                with torch.inference_mode():
                    G(z)

            def run_onnx(feed: dict[str, np.ndarray] = feed) -> None:
                session.run(["images"], feed)

            run_torch()  # warm-up
            run_onnx()
            torch_t: list[tuple[float, float]] = []
            onnx_t: list[tuple[float, float]] = []
            for _ in range(args.rounds):
                torch_t += timed(run_torch, args.repeats)
                onnx_t += timed(run_onnx, args.repeats)
            rows.append(Row(args.preset, batch,
                            batch / statistics.median(t for t, _ in torch_t),
                            batch / statistics.median(t for t, _ in onnx_t),
                            statistics.median(c for _, c in torch_t),
                            statistics.median(c for _, c in onnx_t),
                            max_difference(session, G, range(batch))))
    print(describe(info) + f"; export {export_s:.1f} s")
    print(markdown_table(
        ["preset", "batch", "PyTorch fp32 img/s", "onnxruntime img/s", "onnxruntime / PyTorch",
         "CPU/wall PyTorch, onnxruntime", "max abs difference"],
        [[r.preset, r.batch, f"{r.torch_images_per_s:.2f}", f"{r.onnx_images_per_s:.2f}",
          f"{r.onnx_images_per_s / r.torch_images_per_s:.2f}x",
          f"{r.torch_cpu_per_wall:.2f}, {r.onnx_cpu_per_wall:.2f}", f"{r.max_abs_difference:.2e}"]
         for r in rows]))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": info, "export_seconds": export_s, "rows": [asdict(r) for r in rows]},
            indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
