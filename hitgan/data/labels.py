"""Class labels of a dataset: one sub-folder per class, or a ``dataset.json`` of pairs.

Two sources, in this order:

1. ``dataset.json`` at the dataset's root (a folder or a zip), as StyleGAN2-ADA's dataset tool
   writes it: ``{"labels": [["00000/img00000000.png", 6], ...]}`` with integer labels from 0.
   ``"labels": null`` says the dataset has none. An optional ``"class_names"`` list (written by
   ``hitgan dataset``) fixes the number of classes and names them; without it there are
   ``max(label) + 1`` classes named by their numbers.
2. Otherwise sub-folders: every image in a first-level sub-folder, the sorted folder names are
   classes 0..K-1 (``cat/x.png`` and ``cat/more/y.png`` are both "cat").

Every usable image needs a label, labels are integers in 0..K-1, and every class needs at least
one usable image; a breach raises ``DatasetError`` naming the file. ``find_labels`` returns None
for a dataset without labels; ``require`` turns that into an error that says how to add them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LABELS_FILE = "dataset.json"
HOW_TO_LABEL = ("put the images of each class in their own sub-folder (cat/x.png, dog/y.png; "
                "sorted folder names become classes 0..K-1), or add a dataset.json of "
                '{"labels": [["cat/x.png", 0], ...]} at the dataset\'s root')


class LabelError(ValueError):
    """Labels that are missing, malformed or inconsistent with the images."""


@dataclass(frozen=True)
class Labels:
    values: np.ndarray  # (N,) int64, one per image, in 0..K-1
    class_names: tuple[str, ...]  # K names
    source: str  # where they came from, for messages: "dataset.json", "sub-folders", ...

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def counts(self) -> np.ndarray:
        """(K,) images per class."""
        return np.bincount(self.values, minlength=self.num_classes)


def from_json(text: str, names: Sequence[str], where: str) -> Labels | None:
    """Labels of ``names`` from the text of a ``dataset.json``; None if it says there are none.
    ``where`` names the file in errors."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LabelError(f"{where}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or data.get("labels") is None:
        return None
    pairs = data["labels"]
    if not isinstance(pairs, list):
        raise LabelError(f"{where}: \"labels\" must be a list of [file, label] pairs or null")
    table: dict[str, int] = {}
    for entry in pairs:
        if not (isinstance(entry, list | tuple) and len(entry) == 2
                and isinstance(entry[0], str)):
            raise LabelError(f"{where}: label entry {str(entry)[:80]}: write it as "
                             '["path/in/dataset.png", 3]')
        name, label = entry
        if isinstance(label, bool) or not isinstance(label, int):
            raise LabelError(f"{where}: {name}: label {label!r} is not an integer; labels are "
                             "class numbers 0..K-1")
        if label < 0:
            raise LabelError(f"{where}: {name}: label {label} is negative; use 0..K-1")
        table[name.replace("\\", "/")] = label
    missing = [n for n in names if n not in table]
    if missing:
        raise LabelError(f"{where}: {missing[0]} has no label ({len(missing)} image(s) lack "
                         "one); give every image a [file, label] pair")
    values = np.array([table[n] for n in names], dtype=np.int64)
    class_names = data.get("class_names")
    if class_names is None:
        class_names = [str(k) for k in range(int(values.max()) + 1 if len(values) else 0)]
    elif not (isinstance(class_names, list) and all(isinstance(c, str) for c in class_names)):
        raise LabelError(f"{where}: \"class_names\" must be a list of strings")
    too_big = np.flatnonzero(values >= len(class_names))
    if len(too_big):
        n = names[too_big[0]]
        raise LabelError(f"{where}: {n}: label {table[n]} is out of range: there are "
                         f"{len(class_names)} classes (class_names), use 0..{len(class_names) - 1}")
    return _checked(Labels(values, tuple(class_names), where), names)


def from_folders(names: Sequence[str], folders: Sequence[str], where: str) -> Labels | None:
    """Labels from first-level sub-folders. ``folders``: every first-level sub-folder of the
    dataset (including those whose images were all skipped). None if there are no sub-folders
    or an image lies at the root (``at_root`` finds it): then there are no folder labels."""
    classes = sorted(set(folders))
    if not classes or any("/" not in n for n in names):
        return None
    index = {c: k for k, c in enumerate(classes)}
    values = np.array([index[n.split("/", 1)[0]] for n in names], dtype=np.int64)
    return _checked(Labels(values, tuple(classes), where), names)


def at_root(names: Sequence[str]) -> str | None:
    """The first image outside every sub-folder, if any (it has no folder label)."""
    return next((n for n in names if "/" not in n), None)


def _checked(labels: Labels, names: Sequence[str]) -> Labels:
    empty = np.flatnonzero(labels.counts() == 0)
    if len(empty):
        k = int(empty[0])
        raise LabelError(f"{labels.source}: class {k} ({labels.class_names[k]!r}) has no usable "
                         "image; add images of it, or remove the class")
    assert len(labels.values) == len(names)
    return labels
