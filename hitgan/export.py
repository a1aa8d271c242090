"""The generator as an ONNX file (``hitgan export``), checked with onnxruntime against PyTorch.

The graph is the eval-mode forward: BatchNorm with its running statistics, latents ``z``
(batch, latent_dim) float32 -> ``images`` (batch, channels, R, R), not squashed, as
``HiTGenerator.forward``; a class-conditional generator has a second input, ``labels`` (batch,)
int64 classes in 0..num_classes-1 (not range-checked in the graph). The batch dimension is
dynamic: the CPU memory chunking of the eager forward (a branch on the batch size) is left out
while exporting. torch.onnx's exporter
(torch.export based) writes the file; onnx, onnxscript and onnxruntime are the ``onnx`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hitgan.models.generator import HiTGenerator
from hitgan.sampling import seed_latents

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

TOLERANCE = 1e-4  # fp32 max abs difference allowed between onnxruntime and PyTorch


def export_onnx(generator: HiTGenerator, path: str | Path) -> Path:
    """Write the eval-mode generator to ``path`` as one ONNX file with a dynamic batch."""
    try:
        import onnxscript  # noqa: F401 - torch.onnx's exporter needs it; say so up front
    except ImportError as e:
        raise ImportError("exporting to ONNX needs onnx and onnxscript: pip install "
                          "'hitgan[onnx]'") from e
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generator.eval()
    batch = torch.export.Dim("batch")
    inputs: tuple[torch.Tensor, ...] = (torch.randn(2, generator.config.latent_dim),)
    shapes: dict[str, dict[int, Any]] = {"z": {0: batch}}
    if generator.config.num_classes:
        inputs += (torch.zeros(2, dtype=torch.long),)
        shapes["labels"] = {0: batch}
    torch.onnx.export(generator, inputs, str(path), input_names=list(shapes),
                      output_names=["images"], dynamo=True, external_data=False,
                      dynamic_shapes=shapes, verbose=False)
    return path


def onnx_session(path: str | Path, threads: int = 0) -> InferenceSession:
    """An onnxruntime CPU session of ``path``; ``threads`` per operator (0: its default, one per
    core)."""
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError("checking the ONNX file needs onnxruntime: pip install "
                          "'hitgan[onnx]'") from e
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_difference(session: InferenceSession, generator: HiTGenerator, seeds: Sequence[int]
                   ) -> float:
    """Max abs difference of onnxruntime's images and PyTorch's for ``seeds``, run as one batch
    and again one seed at a time (both batch sizes through the dynamic dimension). A
    conditional generator makes the i-th seed as class i % num_classes."""
    z = seed_latents(seeds, generator.config.latent_dim)
    k = generator.config.num_classes
    labels = torch.arange(len(seeds)) % k if k else None
    feeds = {"z": z.numpy()} | ({} if labels is None else {"labels": labels.numpy()})
    with torch.inference_mode():
        expected = generator.eval()(z, labels).numpy()
    batched = session.run(["images"], feeds)[0]
    single = np.concatenate([session.run(["images"], {n: v[i:i + 1] for n, v in feeds.items()})[0]
                             for i in range(len(seeds))])
    return float(max(np.abs(batched - expected).max(), np.abs(single - expected).max()))
