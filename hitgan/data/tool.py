"""``hitgan dataset SRC DEST.zip``: pre-crop and resize once into an uncompressed zip of PNGs
(like StyleGAN's dataset_tool), so training reads small files and skips no work. Class labels
of the source (``hitgan/data/labels.py``) are kept: ``dataset.json`` lists ``[file, label]``
pairs, as StyleGAN2-ADA's, and the class names (``"labels": null`` when there are none)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hitgan.data.dataset import DatasetError, ImageDataset, Preprocess, crop_resize


def make_dataset_zip(source: str, dest: str | Path, p: Preprocess, strict: bool = False,
                     progress: bool = True, labels: str = "auto") -> dict[str, Any]:
    """Write ``dest`` (atomically) and return a report: counts, skipped files with reasons, and
    the labels kept. ``labels`` as ``ImageDataset``'s ("auto": keep them if the source has
    them). Random crops are not allowed here (they belong to training time)."""
    dest = Path(dest)
    if p.crop == "random":
        raise ValueError("--crop random: a dataset zip stores one fixed crop; use center or fixed")
    if dest.suffix != ".zip":
        raise ValueError(f"{dest}: the destination must end in .zip")
    data = ImageDataset(source, p, strict=strict, progress=progress, labels=labels)
    skipped = list(data.skipped)
    pairs: list[tuple[str, int]] = []
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            for i in tqdm(range(len(data)), desc=f"writing {dest.name}", unit="img",
                          disable=not progress):
                try:
                    img = crop_resize(data.load_image(i), p)
                except Exception as e:  # decode failure past the header check
                    if strict:
                        raise DatasetError(f"{data.names[i]}: cannot decode ({e})") from e
                    skipped.append((data.names[i], f"cannot decode ({type(e).__name__})"))
                    continue
                buf = io.BytesIO()
                img.save(buf, format="PNG", compress_level=1)
                name = f"{written // 1000:05d}/img{written:08d}.png"
                z.writestr(name, buf.getvalue())
                if data.labels is not None:
                    pairs.append((name, int(data.labels.values[i])))
                written += 1
            report = {"source": str(source), "images": written, "skipped": len(skipped),
                      "skipped_files": [{"name": n, "reason": r} for n, r in skipped],
                      **p.describe(),
                      "labels": pairs if data.labels is not None else None,
                      "class_names": (list(data.labels.class_names) if data.labels is not None
                                      else None)}
            z.writestr("dataset.json", json.dumps(report, indent=1))
        if written == 0:
            raise DatasetError(f"{source}: no image could be written")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return report
