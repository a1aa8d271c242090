"""The fast extractor against the TorchScript reference: the same features on real digits and on
patterns, the same FID of two sets, the layout checks, and the fixed-batch path of the compiled
extractor (with torch.compile replaced by the plain function: inductor itself is measured by
``python -m bench.fid_speed``, its compilation too slow for CI)."""

import pytest
import torch
from test_metrics import pattern

from hitgan.data.dataset import ImageDataset, Preprocess
from hitgan.metrics.features import ExtractorError, InceptionExtractor, quantize
from hitgan.metrics.fid import fid_from_features

TOLERANCE = 1e-4  # of the feature scale (RMS of the reference's features), the bound


@pytest.fixture(scope="module")
def extractors() -> dict[str, InceptionExtractor]:
    return {kind: InceptionExtractor(kind=kind) for kind in ("fast", "reference")}


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """16 MNIST digits at 32px (two of each of 8 classes), uint8 (16, 3, 32, 32)."""
    data = ImageDataset("mnist", Preprocess(32))
    return quantize(torch.stack([data[i * 311] for i in range(16)]))


@pytest.fixture(scope="module")
def features(extractors, digits) -> dict[str, torch.Tensor]:
    images = torch.cat([digits, pattern()])
    return {kind: ex(images) for kind, ex in extractors.items()}


@pytest.mark.slow
def test_fast_features_equal_the_reference(features):
    ref, fast = features["reference"], features["fast"]
    scale = ref.pow(2).mean().sqrt()
    assert ref.shape == fast.shape == (18, 2048) and fast.dtype == torch.float32
    assert (fast - ref).abs().max() <= TOLERANCE * scale
    assert 0.1 < scale < 10 and fast.min() >= 0  # pool features after ReLU, of order 1


@pytest.mark.slow
def test_fid_of_two_sets_agrees_through_both(features):
    fids = {kind: fid_from_features(f[:8].double().numpy(), f[8:16].double().numpy())
            for kind, f in features.items()}
    assert fids["reference"] > 1
    assert fids["fast"] == pytest.approx(fids["reference"], abs=0.01)


def test_identity_names_the_kind_and_bad_options(extractors):
    fast, ref = extractors["fast"].identity, extractors["reference"].identity
    assert fast["sha256"] == ref["sha256"] and fast["standard"]
    assert (fast["kind"], ref["kind"]) == ("fast", "reference")
    with pytest.raises(ValueError, match="--extractor 'tf'"):
        InceptionExtractor(kind="tf")
    with pytest.raises(ValueError, match="only the fast extractor is compiled"):
        InceptionExtractor(kind="reference", compile=True)


def test_other_torchscript_layouts_are_refused_by_the_fast_extractor(tmp_path):
    class Pool(torch.nn.Module):  # the right interface, not the wheel's layers
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1).repeat(1, 683)[
                :, :2048]

    path = tmp_path / "other.pt"
    torch.jit.script(Pool()).save(str(path))
    with pytest.raises(ExtractorError, match=r"other\.pt: not the layout .* --extractor reference"):
        InceptionExtractor(path)
    assert InceptionExtractor(path, kind="reference")(pattern()).shape == (2, 2048)


def test_compiled_path_runs_fixed_batches(monkeypatch, extractors, digits):
    monkeypatch.setattr(torch, "compile", lambda fn, **options: fn)
    fixed = InceptionExtractor(compile=True)
    eager = extractors["fast"]
    grey = digits[:5, :1]
    torch.testing.assert_close(fixed(grey[:2]), eager(grey[:2]))  # sets the batch to 2
    assert fixed._batch == 2
    torch.testing.assert_close(fixed(grey), eager(grey), atol=1e-5, rtol=1e-5)  # 2 + 2 + 1 pad


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_features_equal_the_cpu_reference(features, digits):
    images = torch.cat([digits, pattern()]).cuda()
    ref = features["reference"]
    for kind in ("fast", "reference"):
        got = InceptionExtractor(kind=kind).cuda()(images).cpu()
        assert (got - ref).abs().max() <= TOLERANCE * ref.pow(2).mean().sqrt(), kind
