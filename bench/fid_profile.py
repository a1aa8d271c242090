"""Where the FID extractors spend their time: torch.profiler's self CPU time of one batch of
random 32 px images through the reference network (TorchScript; its resize runs outside) and the
fast extractor (compiled unless --no-compile; resize inside).

    python -m bench.fid_profile                  # compiles first (tens of seconds)
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from hitgan.metrics.features import InceptionExtractor, preprocess


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.fid_profile", description=__doc__)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rows", type=int, default=8, help="ops per table")
    p.add_argument("--no-compile", action="store_true", help="profile the eager fast network")
    args = p.parse_args(argv)
    if args.batch < 1:
        p.error(f"--batch {args.batch}: must be >= 1")
    images = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8)
    ref = InceptionExtractor(kind="reference")
    fast = InceptionExtractor(compile=not args.no_compile)
    with torch.inference_mode():
        fast(images)  # compiles, when it does
        x = preprocess(images)
        for name, run in (("reference network (resize outside)", lambda: ref.net(x)),
                          ("fast extractor (resize inside)", lambda: fast(images))):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run()
            print(name)
            print(prof.key_averages().table(sort_by="self_cpu_time_total",
                                            row_limit=args.rows))


if __name__ == "__main__":
    main()
