"""Save and load models as ``model.safetensors`` + ``config.json`` in one directory.

Loading never unpickles. The weights file records a SHA-256 of its tensor data in its header,
so a tampered or truncated file is refused with a message naming it, and a config/weights
mismatch names the tensor and both shapes.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from hitgan.models.config import DiscriminatorConfig, GeneratorConfig
from hitgan.models.discriminator import StyleGANDiscriminator
from hitgan.models.generator import HiTGenerator

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
MODEL_CLASSES: dict[str, tuple[type[nn.Module], Any]] = {
    "HiTGenerator": (HiTGenerator, GeneratorConfig),
    "StyleGANDiscriminator": (StyleGANDiscriminator, DiscriminatorConfig),
}


class WeightsError(ValueError):
    """A weights file that is unreadable, corrupt, or does not fit its config."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def state_dict_to_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes whose header carries ``sha256`` of the tensor data."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    data = st_save(tensors)
    digest = hashlib.sha256(_data_section(data)).hexdigest()
    return st_save(tensors, metadata={**metadata, "sha256": digest})


def _data_section(raw: bytes) -> bytes:
    (n,) = struct.unpack("<Q", raw[:8])
    return raw[8 + n:]


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file, verifying its recorded checksum. Never unpickles."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weights ({e.strerror})") from e
    return weights_from_bytes(raw, str(path))


def weights_from_bytes(raw: bytes, source: str
                       ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata of safetensors bytes; ``source`` names them in errors."""
    try:
        if len(raw) < 8:
            raise SafetensorError("file shorter than its 8-byte header length")
        (n,) = struct.unpack("<Q", raw[:8])
        meta = json.loads(raw[8:8 + n]).get("__metadata__") or {}
        tensors = st_load(raw)
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise WeightsError(f"{source}: not a valid safetensors file (truncated or corrupt?): "
                           f"{e}") from e
    expected = meta.get("sha256")
    if expected is not None and hashlib.sha256(_data_section(raw)).hexdigest() != expected:
        raise WeightsError(f"{source}: tensor data does not match the checksum in its header; "
                           "the file was modified or damaged, restore it from a good copy")
    return tensors, meta


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load that names every missing, unexpected or mis-shaped tensor."""
    own = model.state_dict()
    problems = [f"missing tensor {k} {tuple(v.shape)}" for k, v in own.items() if k not in state]
    problems += [f"unexpected tensor {k} {tuple(v.shape)}" for k, v in state.items()
                 if k not in own]
    problems += [f"tensor {k}: file has shape {tuple(state[k].shape)}, config needs "
                 f"{tuple(v.shape)}" for k, v in own.items()
                 if k in state and state[k].shape != v.shape]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                           if len(problems) > 5 else "")
        raise WeightsError(f"{source}: weights do not fit the config: {shown}")
    model.load_state_dict(state, strict=True)


def save_pretrained(model: nn.Module, directory: str | os.PathLike[str]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (each atomically) into ``directory``."""
    name = type(model).__name__
    if name not in MODEL_CLASSES:
        raise TypeError(f"save_pretrained supports {sorted(MODEL_CLASSES)}, not {name}")
    out = Path(directory)
    config = {"format_version": FORMAT_VERSION, "class": name,
              "config": model.config.to_dict()}  # type: ignore[operator]
    weights = state_dict_to_bytes(model.state_dict(), {"format": "hitgan", "class": name})
    atomic_write(out / WEIGHTS_NAME, weights)
    atomic_write(out / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode())
    return out


def read_config(directory: str | os.PathLike[str]) -> tuple[str, Any]:
    path = Path(directory) / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
        name = data["class"]
        config_cls = MODEL_CLASSES[name][1]
        return name, config_cls.from_dict(data["config"])
    except FileNotFoundError as e:
        raise WeightsError(f"{path}: no config.json; is {directory} a hitgan model directory "
                           "written by save_pretrained?") from e
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise WeightsError(f"{path}: not a hitgan config ({type(e).__name__}: {e})") from e
    except ValueError as e:
        raise WeightsError(f"{path}: invalid config: {e}") from e


def from_pretrained(directory: str | os.PathLike[str],
                    map_location: str | torch.device = "cpu") -> nn.Module:
    """Build the model from ``config.json`` and load ``model.safetensors`` into it."""
    name, config = read_config(directory)
    model = MODEL_CLASSES[name][0](config)
    path = Path(directory) / WEIGHTS_NAME
    state, _ = read_weights(path)
    load_state_checked(model, state, str(path))
    return model.to(map_location)
