"""The ``hitgan`` command. Thin: parses, validates, calls the library."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from hitgan.models.config import PRESETS, get_preset


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds += range(int(lo), int(hi or lo) + 1)
    except ValueError as e:
        raise ValueError(f"--seeds {text!r}: use integers and ranges such as 0-63 or 1,5,9") from e
    if not seeds:
        raise ValueError(f"--seeds {text!r} selects no seed; use e.g. 0-15")
    return seeds


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def cmd_info(args: argparse.Namespace) -> None:
    from hitgan.models.cost import activation_bytes, stage_costs
    from hitgan.models.discriminator import StyleGANDiscriminator

    names = args.preset or list(PRESETS)
    for name in names:
        preset = get_preset(name)
        cfg = preset.generator
        rows = stage_costs(cfg)
        with torch.device("meta"):
            d_params = sum(p.numel() for p in StyleGANDiscriminator(preset.discriminator)
                           .parameters())
        print(f"{name}: {preset.note}")
        print(f"  generator {cfg.resolution}px, latent {cfg.latent_dim}, attention "
              f"{cfg.attention}, norm {cfg.norm}")
        print(f"  {'part':<24}{'params':>14}{'GFLOP/img':>12}{'FLOP/px':>12}")
        for r in rows:
            per_px = f"{r.flops / r.pixels:,.0f}" if r.pixels else "-"
            print(f"  {r.name:<24}{r.params:>14,}{r.flops / 1e9:>12.3f}{per_px:>12}")
        total = sum(r.flops for r in rows)
        print(f"  {'total':<24}{sum(r.params for r in rows):>14,}{total / 1e9:>12.3f}"
              f"{total / cfg.resolution**2:>12,.0f}")
        act = activation_bytes(cfg, args.batch)
        print(f"  activations saved for backward at batch {args.batch}: {_fmt_bytes(act)} (fp32)")
        print(f"  discriminator {preset.discriminator.resolution}px: {d_params:,} params\n")
    if len(names) > 1:
        print("Cost per output pixel (forward, generator): near-linear in pixels")
        for name in names:
            cfg = get_preset(name).generator
            total = sum(r.flops for r in stage_costs(cfg))
            print(f"  {name:<14}{cfg.resolution:>6}px {total / 1e9:>9.2f} GFLOP/img "
                  f"{total / cfg.resolution**2:>10,.0f} FLOP/px")


def _load_generator(args: argparse.Namespace) -> torch.nn.Module:
    from hitgan.models.generator import HiTGenerator
    from hitgan.models.io import from_pretrained

    if args.model:
        model = from_pretrained(args.model)
        if not isinstance(model, HiTGenerator):
            raise ValueError(f"--model {args.model}: holds a {type(model).__name__}, "
                             "not a generator")
        return model
    torch.manual_seed(args.init_seed)
    print(f"no --model given: sampling a randomly initialised {args.preset} "
          f"(init seed {args.init_seed})")
    return HiTGenerator(get_preset(args.preset).generator)


def cmd_generate(args: argparse.Namespace) -> None:
    import numpy as np

    from hitgan.data.images import make_grid, save_image, to_uint8

    seeds = parse_seeds(args.seeds)
    G = _load_generator(args).eval()
    latent = G.config.latent_dim
    out = Path(args.out)
    start = time.perf_counter()
    images = []
    with torch.inference_mode():
        for i in range(0, len(seeds), args.batch):
            chunk = seeds[i:i + args.batch]
            z = torch.stack([torch.randn(latent, generator=torch.Generator().manual_seed(s))
                             for s in chunk])
            images.append(to_uint8(G(z)))
    images_np = np.concatenate(images)
    for seed, img in zip(seeds, images_np, strict=True):
        save_image(img, out / f"seed{seed:04d}.png")
    save_image(make_grid(images_np), out / "grid.png")
    record = {"model": args.model, "preset": None if args.model else args.preset,
              "init_seed": None if args.model else args.init_seed, "seeds": seeds,
              "resolution": G.config.resolution, "seconds": round(time.perf_counter() - start, 3)}
    (out / "generate.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {len(seeds)} images and grid.png to {out} "
          f"({len(seeds) / record['seconds']:.1f} img/s)")


def cmd_convert(args: argparse.Namespace) -> None:
    from hitgan.convert.official import (
        check_against_outputs,
        configs_from_meta,
        convert_official,
        load_npz,
    )
    from hitgan.models.io import save_pretrained

    src = Path(args.src)
    if not src.exists():
        raise ValueError(f"{src}: no such file or directory")
    if src.is_dir():
        from hitgan.convert.tf_checkpoint import read_tf_checkpoint

        variables, meta = read_tf_checkpoint(str(src), ema=args.ema), {}
    else:
        variables, meta = load_npz(src)
    if args.preset:
        preset = get_preset(args.preset)
        gen_cfg, disc_cfg = preset.generator, preset.discriminator
    elif meta:
        gen_cfg, disc_cfg = configs_from_meta(meta)
    else:
        raise ValueError(f"{src}: has no meta describing the model; pass --preset "
                         f"(official layouts: {', '.join(p for p in PRESETS if '-b-' in p)})")
    has_disc = any(k.startswith("discriminator/") for k in variables)
    gen, disc = convert_official(variables, gen_cfg, disc_cfg if has_disc else None)
    for name, diff in check_against_outputs(variables, gen, disc).items():
        print(f"check against official {name}: max abs difference {diff:.2e}")
    out = Path(args.out)
    save_pretrained(gen, out / "generator")
    print(f"wrote {out / 'generator'}")
    if disc is not None:
        save_pretrained(disc, out / "discriminator")
        print(f"wrote {out / 'discriminator'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hitgan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="parameters, FLOPs and activation memory per stage")
    p.add_argument("--preset", action="append", choices=sorted(PRESETS),
                   help="repeatable; default: every preset")
    p.add_argument("--batch", type=int, default=1, help="batch size for activation memory")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("generate", help="images for given seeds, and a grid")
    p.add_argument("--model", help="directory written by save_pretrained (a generator)")
    p.add_argument("--preset", default="hit-tiny-32", choices=sorted(PRESETS),
                   help="without --model: sample a randomly initialised preset")
    p.add_argument("--init-seed", type=int, default=0)
    p.add_argument("--seeds", default="0-15", help="e.g. 0-63 or 1,5,9")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", default="out/generate")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("convert-official", help="official TF variables -> hitgan weights")
    p.add_argument("src", help="npz of official variables, or a TF checkpoint directory")
    p.add_argument("--out", required=True, help="writes OUT/generator and OUT/discriminator")
    p.add_argument("--preset", choices=sorted(PRESETS), help="model layout if SRC has no meta")
    p.add_argument("--ema", action="store_true", help="TF checkpoint: take the EMA generator")
    p.set_defaults(func=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "batch", 1) < 1:
        print(f"hitgan: error: --batch {args.batch}: must be >= 1", file=sys.stderr)
        return 2
    from hitgan.models.io import WeightsError

    try:
        args.func(args)
    except (ValueError, WeightsError, OSError, ImportError) as e:
        print(f"hitgan: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
