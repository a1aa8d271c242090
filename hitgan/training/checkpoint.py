"""Crash-safe training checkpoints.

A checkpoint is a directory ``RUN/checkpoints/step-00001000/``. It is written under a temporary
name, every file fsynced, then ``manifest.json`` (the sha256 of every file) last, and only then
renamed into place. A process killed at any point leaves either the previous checkpoints as they
were or a ``.tmp`` directory that is never loaded. ``latest_valid`` checks manifests and hashes
and skips (with a warning) anything incomplete or damaged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from hitgan.models.config import GeneratorConfig
from hitgan.models.generator import HiTGenerator
from hitgan.models.io import load_state_checked, weights_from_bytes

log = logging.getLogger(__name__)

PREFIX = "step-"
MANIFEST = "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, damaged, or not a hitgan checkpoint."""


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save(run_dir: Path, step: int, files: dict[str, bytes], keep: int,
         protect: int | None = None) -> Path:
    """Write ``files`` as checkpoint ``step`` atomically; keep the newest ``keep`` checkpoints
    plus the one at step ``protect`` (the best by FID)."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    manifest = {"step": step, "files": {}}
    for name, data in files.items():
        _write(tmp / name, data)
        manifest["files"][name] = hashlib.sha256(data).hexdigest()
    _write(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
    _fsync_dir(tmp)
    if final.exists():  # re-saving a step (e.g. at exit right after a periodic save)
        old = root / f".{final.name}.old-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    _fsync_dir(root)
    _prune(root, keep, protect)
    return final


def _steps(root: Path) -> list[tuple[int, Path]]:
    found = []
    for p in root.glob(f"{PREFIX}*"):
        try:
            found.append((int(p.name[len(PREFIX):]), p))
        except ValueError:
            continue
    return sorted(found, reverse=True)


def _prune(root: Path, keep: int, protect: int | None) -> None:
    for i, (step, path) in enumerate(_steps(root)):
        if i >= keep and step != protect:
            shutil.rmtree(path, ignore_errors=True)
    for stale in root.glob(".*.tmp-*"):  # left by a killed writer
        if not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)


def verify(path: Path) -> dict[str, bytes]:
    """Read every file of a checkpoint, checking the manifest; raises CheckpointError."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        names = manifest["files"]
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: no {MANIFEST} (incomplete checkpoint)") from e
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable {MANIFEST} ({e})") from e
    files = {}
    for name, digest in names.items():
        try:
            data = (path / name).read_bytes()
        except OSError as e:
            raise CheckpointError(f"{path / name}: cannot read ({e.strerror})") from e
        if hashlib.sha256(data).hexdigest() != digest:
            raise CheckpointError(f"{path / name}: content does not match {MANIFEST} "
                                  "(damaged or modified)")
        files[name] = data
    return files


def latest_valid(run_dir: Path) -> tuple[Path, dict[str, bytes]] | None:
    """The newest checkpoint that verifies, skipping damaged ones with a warning."""
    for _, path in _steps(checkpoint_dir(run_dir)):
        try:
            return path, verify(path)
        except CheckpointError as e:
            log.warning("skipping checkpoint: %s", e)
    return None


def load_generator(path: str | os.PathLike[str], which: str = "G_ema") -> HiTGenerator:
    """The generator of a checkpoint directory, or of the newest valid checkpoint of a run
    directory. ``which``: "G_ema" (default, what is evaluated) or "G"."""
    path = Path(path)
    if (path / MANIFEST).exists():
        files = verify(path)
    else:
        found = latest_valid(path)
        if found is None:
            raise CheckpointError(f"{path}: neither a checkpoint nor a run directory with a "
                                  "valid checkpoint")
        path, files = found
    config = GeneratorConfig.from_dict(json.loads(files["state.json"])["generator"])
    model = HiTGenerator(config)
    tensors, _ = weights_from_bytes(files[f"{which}.safetensors"], f"{path}/{which}")
    load_state_checked(model, tensors, f"{path}/{which}.safetensors")
    return model
