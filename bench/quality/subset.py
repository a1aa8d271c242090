"""A random subset of an image zip, for measuring what a recipe does on small data sets.

    python -m bench.quality.subset data/suite/photos-colour-32.zip small.zip --images 100 --seed 1

The draw is Python's ``random.Random(seed).sample`` of the zip's file names in sorted order, so
the same source, count and seed give the same files anywhere; each file is copied byte for byte.
"""

from __future__ import annotations

import argparse
import random
import zipfile
from pathlib import Path


def subset(source: Path, dest: Path, images: int, seed: int) -> list[str]:
    """Write ``images`` files drawn from zip ``source`` into zip ``dest`` (written under a
    temporary name, then renamed); returns their names."""
    with zipfile.ZipFile(source) as z:
        names = sorted(n for n in z.namelist() if not n.endswith("/"))
        if not 1 <= images <= len(names):
            raise ValueError(f"--images {images}: {source} has {len(names)} files; "
                             f"draw 1 to {len(names)}")
        drawn = random.Random(seed).sample(names, images)
        tmp = dest.with_name(dest.name + ".tmp")
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as out:
                for name in drawn:
                    out.writestr(name, z.read(name))
        except BaseException:
            tmp.unlink(missing_ok=True)  # a failed draw leaves nothing behind
            raise
    tmp.replace(dest)
    return drawn


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.quality.subset",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="a zip of images (e.g. a suite set)")
    p.add_argument("dest", type=Path, help="the subset's zip (replaced if it exists)")
    p.add_argument("--images", type=int, required=True, help="how many files to draw")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.source.resolve() == args.dest.resolve():
        p.error(f"{args.dest}: the subset would replace its source; name another file")
    try:
        subset(args.source, args.dest, args.images, args.seed)
    except ValueError as e:
        p.error(str(e))
    except (OSError, zipfile.BadZipFile) as e:
        p.error(f"{args.source}: {e}")
    print(f"{args.dest}: {args.images} images of {args.source} (seed {args.seed})")


if __name__ == "__main__":
    main()
