"""Datasets: decoding rules, official crops, bad files skipped and reported, the dataset tool."""

import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from hitgan.cli import main
from hitgan.data.dataset import (
    DatasetError,
    ImageDataset,
    Preprocess,
    crop_shape,
    preprocess,
    to_rgb,
)
from hitgan.data.tool import make_dataset_zip


def _save(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)


@pytest.fixture
def messy(tmp_path):
    """A folder with good images in several modes and every kind of bad file."""
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    _save(root / "rgb.png", rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    _save(root / "nested" / "gray.jpg", rng.integers(0, 256, (50, 50), dtype=np.uint8))
    _save(root / "rgba.png", rng.integers(0, 256, (32, 32, 4), dtype=np.uint8))
    _save(root / "deep16.png", rng.integers(0, 65535, (32, 32), dtype=np.uint16))
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("not an image")
    (root / "readme.txt").write_text("hello")
    _save(root / "tiny.png", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    full = (root / "rgb.png").read_bytes()
    (root / "truncated.png").write_bytes(full[: len(full) // 2])
    return root


def test_skips_and_reports_bad_files(messy):
    data = ImageDataset(messy, Preprocess(16), progress=False)
    assert sorted(data.names) == ["deep16.png", "nested/gray.jpg", "rgb.png", "rgba.png"]
    reasons = dict(data.skipped)
    assert reasons["empty.png"] == "empty file"
    assert reasons["tiny.png"].startswith("tiny (4x4")
    assert reasons["text.jpg"].startswith("not a readable image")
    assert reasons["truncated.png"].startswith("not a readable image")
    assert reasons["readme.txt"] == "not an image file extension"
    for i in range(len(data)):
        x = data[i]
        assert x.shape == (3, 16, 16) and x.min() >= -1 and x.max() <= 1


def test_strict_and_empty_datasets_fail_at_start(messy, tmp_path):
    with pytest.raises(DatasetError, match=r"4 unreadable image\(s\) with --strict"):
        ImageDataset(messy, Preprocess(16), strict=True, progress=False)
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "bad.png").write_bytes(b"xx")
    with pytest.raises(DatasetError, match="no usable images"):
        ImageDataset(tmp_path / "none", Preprocess(16), progress=False)
    with pytest.raises(DatasetError, match="no such dataset"):
        ImageDataset(tmp_path / "missing", Preprocess(16), progress=False)
    (tmp_path / "x.zip").write_bytes(b"PK not really")
    with pytest.raises(DatasetError, match="not a readable zip"):
        ImageDataset(tmp_path / "x.zip", Preprocess(16), progress=False)


def test_decoding_rules():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red but fully transparent -> white background
    assert np.asarray(to_rgb(Image.fromarray(rgba, "RGBA")))[0, 0].tolist() == [255, 255, 255]
    deep = np.full((8, 8), 65535, dtype=np.uint16)
    assert np.asarray(to_rgb(Image.fromarray(deep)))[0, 0].tolist() == [255, 255, 255]
    half = np.full((8, 8), 257 * 100, dtype=np.uint16)
    assert np.asarray(to_rgb(Image.fromarray(half)))[0, 0].tolist() == [100, 100, 100]
    pal = Image.fromarray(np.zeros((8, 8), dtype=np.uint8), "L").convert("P")
    assert to_rgb(pal).mode == "RGB"
    cmyk = Image.new("CMYK", (8, 8), (0, 0, 0, 0))
    assert np.asarray(to_rgb(cmyk))[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize(("h", "w", "aspect", "prop"), [
    (100, 200, 1.0, 1.0), (200, 100, 1.0, 0.875), (375, 500, 1.0, 0.875), (64, 64, 2.0, 1.0)])
def test_crop_shape_matches_official_formula(h, w, aspect, prop):
    """Official _compute_crop_shape: the requested aspect ratio decides the cropped side."""
    if aspect > w / h:
        expected = (round(prop / aspect * w), round(prop * w))
    else:
        expected = (round(prop * h), round(prop * aspect * h))
    assert crop_shape(h, w, aspect, prop) == expected


def test_center_crop_keeps_the_centre():
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, 10:30] = 255  # the central square is white, the sides black
    out = preprocess(Image.fromarray(arr), Preprocess(20, crop="center"))
    assert torch.all(out == 1.0)
    fixed = preprocess(Image.fromarray(arr), Preprocess(20, crop="fixed"))
    assert fixed.min() == -1.0  # squashed whole image keeps the black sides


def test_random_crops_are_deterministic_per_index_and_epoch(messy):
    data = ImageDataset(messy, Preprocess(16, crop="random", crop_proportion=0.5),
                        progress=False)
    assert torch.equal(data[0, 3], data[0, 3])
    assert not torch.equal(data[0, 3], data[0, 4])


def test_builtin_mnist():
    data = ImageDataset("mnist", Preprocess(32), progress=False)
    assert len(data) == 5000
    x = data[7]
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[1])
    assert (x[:, :2] == -1).all()  # padded border is black


def test_dataset_tool_round_trip(messy, tmp_path):
    dest = tmp_path / "out.zip"
    report = make_dataset_zip(str(messy), dest, Preprocess(16), progress=False)
    assert report["images"] == 4 and report["skipped"] == 5
    with zipfile.ZipFile(dest) as z:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        meta = json.loads(z.read("dataset.json"))
    assert meta["resolution"] == 16 and len(meta["skipped_files"]) == 5
    data = ImageDataset(dest, Preprocess(16), progress=False)
    assert len(data) == 4 and data.skipped == []
    direct = ImageDataset(messy, Preprocess(16), progress=False)
    assert torch.equal(data[0], direct[direct.names.index("deep16.png")])


def test_dataset_cli_keeps_existing_output_on_error(messy, tmp_path, capsys):
    dest = tmp_path / "keep.zip"
    dest.write_bytes(b"precious")
    assert main(["dataset", str(messy), str(dest), "--resolution", "16", "--strict"]) == 1
    assert "with --strict" in capsys.readouterr().err
    assert dest.read_bytes() == b"precious"
    assert main(["dataset", str(messy), str(dest), "--resolution", "16"]) == 0
    assert "skipped 5" in capsys.readouterr().out


def test_grey_data_is_found_and_read_as_one_channel(tmp_path):
    """Grey RGB files (R = G = B), L files and the built-in digits are grey; one colour file
    makes the whole set colour. Read as one channel, each image equals its red channel."""
    rng = np.random.default_rng(1)
    grey = tmp_path / "grey"
    for i in range(3):
        g = rng.integers(0, 256, (20, 20), dtype=np.uint8)
        _save(grey / f"rgb{i}.png", np.repeat(g[..., None], 3, axis=-1))
    _save(grey / "l.png", rng.integers(0, 256, (20, 20), dtype=np.uint8))
    data = ImageDataset(grey, Preprocess(16), progress=False)
    assert data.is_greyscale()
    rgb = [data[i] for i in range(len(data))]
    data.set_channels(1)
    for i, three in enumerate(rgb):
        one = data[i]
        assert one.shape == (1, 16, 16)
        torch.testing.assert_close(one[0], three[0], rtol=0, atol=0)
        torch.testing.assert_close(three[1], three[2], rtol=0, atol=0)

    colour = tmp_path / "colour"
    for i in range(3):
        g = rng.integers(0, 256, (20, 20), dtype=np.uint8)
        _save(colour / f"rgb{i}.png", np.repeat(g[..., None], 3, axis=-1))
    tinted = np.repeat(rng.integers(0, 255, (20, 20, 1), dtype=np.uint8), 3, axis=-1)
    tinted[5, 5, 2] += 1  # one pixel off grey
    _save(colour / "tinted.png", tinted)
    assert not ImageDataset(colour, Preprocess(16), progress=False).is_greyscale()
    assert ImageDataset("mnist", Preprocess(32)).is_greyscale()
    with pytest.raises(ValueError, match="channels=2"):
        Preprocess(16, channels=2)
