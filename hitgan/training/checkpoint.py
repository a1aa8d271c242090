"""Crash-safe training checkpoints.

A checkpoint is a directory ``RUN/checkpoints/step-00001000/``. It is written under a temporary
name, every file fsynced, then ``manifest.json`` (the sha256 of every file) last, and only then
renamed into place. A process killed at any point leaves either the previous checkpoints as they
were or a ``.tmp`` directory that is never loaded. ``latest_valid`` checks manifests and hashes
and skips (with a warning) anything incomplete or damaged.

A training checkpoint (``save_training``) holds G, D and G_ema as safetensors, the optimizer,
grad scaler and step-generator states and every process's torch RNG state in ``optim.pt``
(tensors only: ``torch.load(weights_only=True)``), and the counters, run record and the other
RNG states in ``state.json``. ``load_training`` restores all of it in place.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from hitgan.models.config import GeneratorConfig
from hitgan.models.generator import HiTGenerator
from hitgan.models.io import load_state_checked, state_dict_to_bytes, weights_from_bytes

if TYPE_CHECKING:
    from hitgan.distributed import DistInfo
    from hitgan.training.config import TrainConfig

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


def _check_same_generator(path: Path, saved: dict[str, Any], live: GeneratorConfig) -> None:
    """A resumed run must build the generator that was saved: a recipe that changed since (or
    another flag) names the fields and the flags that restore them."""
    def weights(cfg: GeneratorConfig) -> dict[str, Any]:  # syncbatch: BatchNorm's weights
        return {**cfg.to_dict(), "norm": cfg.norm.replace("syncbatch", "batch")}

    now = weights(live)
    differ = {k: v for k, v in weights(GeneratorConfig.from_dict(saved)).items() if now[k] != v}
    if differ:
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in differ.items()
                         if k in ("norm", "upsample"))
        if "out_channels" in differ:
            flags = f"{flags} --channels {differ['out_channels']}".strip()
        fields = ", ".join(f"{k}={v!r} (now {now[k]!r})" for k, v in differ.items())
        raise CheckpointError(f"{path}: made with a generator of {fields}; resume with "
                              f"{flags or 'the options it was made with'}")


# ---- training state ---------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingState:
    """The live objects of a run that a checkpoint saves and a resume loads into, in place."""
    models: dict[str, nn.Module]  # "G", "D", "G_ema": NAME.safetensors
    optimizers: dict[str, Any]  # "G", "D", "scaler": anything with (load_)state_dict
    gen: torch.Generator  # the step's random draws


def rng_state() -> dict[str, Any]:
    """This process's torch, NumPy and Python RNG states (NumPy's and Python's as JSON)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    return {"torch": torch.get_rng_state(), "numpy": [kind, keys.tolist(), pos, has_gauss,
                                                      gauss],
            "python": [py[0], list(py[1]), py[2]]}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_training(run_dir: Path, live: TrainingState, state: dict[str, Any], info: DistInfo,
                  keep: int, protect: int | None = None) -> Path | None:
    """Checkpoint step ``state["step"]``: ``state`` (counters and run record, JSON) with every
    process's RNG states, which process 0 gathers and writes. Every process calls it; process
    0 gets the checkpoint's path, the others None. ``keep`` and ``protect`` as in ``save``."""
    rng = rng_state()
    ranks = [rng] * info.world
    if dist.is_initialized():
        dist.all_gather_object(ranks, rng)  # in-process, trusted
    if not info.is_main:
        return None
    opt = io.BytesIO()
    torch.save({**{k: o.state_dict() for k, o in live.optimizers.items()},
                "gen": live.gen.get_state(), "torch_rng": [r["torch"] for r in ranks]}, opt)
    state = {**state, "rng": [{k: v for k, v in r.items() if k != "torch"} for r in ranks]}
    files = {f"{k}.safetensors": state_dict_to_bytes(m.state_dict(), {})
             for k, m in live.models.items()}
    files |= {"optim.pt": opt.getvalue(), "state.json": json.dumps(state).encode()}
    return save(run_dir, state["step"], files, keep, protect)


def find_resume(run_dir: Path, resume: str) -> tuple[Path, dict[str, bytes]] | None:
    """The checkpoint of ``--resume``: "auto" the run's newest valid one (None if there is
    none), else the directory given, verified (CheckpointError if it does not verify)."""
    if resume != "auto":
        return Path(resume), verify(Path(resume))
    found = latest_valid(run_dir)
    if found is None:
        log.info("resume auto: no valid checkpoint in %s, starting fresh", run_dir)
    return found


def load_training(path: Path, files: dict[str, bytes], live: TrainingState, cfg: TrainConfig,
                  info: DistInfo) -> dict[str, Any]:
    """Load a verified checkpoint into ``live``, and this process's RNG states when the run
    has as many processes as the one that saved it; returns the saved ``state``."""
    state = json.loads(files["state.json"])
    saved = state["train"]
    if saved["preset"] != cfg.preset:
        raise CheckpointError(f"{path}: made with preset {saved['preset']}, not {cfg.preset}")
    if saved.get("cond", False) != cfg.cond:
        raise CheckpointError(f"{path}: made {'with' if saved.get('cond') else 'without'} "
                              "--cond; resume it the same way")
    _check_same_generator(path, state["generator"], live.models["G"].config)
    for name, model in live.models.items():
        tensors, _ = weights_from_bytes(files[f"{name}.safetensors"], f"{path}/{name}")
        load_state_checked(model, tensors, f"{path}/{name}.safetensors")
    opt = torch.load(io.BytesIO(files["optim.pt"]), weights_only=True)
    for name, optimizer in live.optimizers.items():
        optimizer.load_state_dict(opt[name])
    live.gen.set_state(opt["gen"])
    if len(state["rng"]) == info.world:
        set_rng_state({**state["rng"][info.rank], "torch": opt["torch_rng"][info.rank]})
    else:
        log.warning("%s: saved with %d processes, now %d: per-process RNG states not restored "
                    "(the training stream itself is unaffected)", path, len(state["rng"]),
                    info.world)
    return state
