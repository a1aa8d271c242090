"""Ways a trained generator leaves hitgan: `hitgan export` to ONNX (checked with onnxruntime),
and `hitgan generate --interpolate ... --out x.mp4` (or .gif) for a video alone."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from test_metrics import visible_generator

from hitgan.cli import main
from hitgan.models.io import save_pretrained
from hitgan.sampling import save_animation


@pytest.fixture(scope="module")
def generator() -> torch.nn.Module:
    return visible_generator()


@pytest.fixture(scope="module")
def model_dir(generator, tmp_path_factory):
    return str(save_pretrained(generator, tmp_path_factory.mktemp("export") / "model"))


@pytest.mark.slow
def test_onnx_export_matches_pytorch(generator, model_dir, tmp_path, monkeypatch, capsys):
    """docs/serving.md's command, on the tiny preset."""
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--model", model_dir, "--format", "onnx", "--out", "g.onnx"]) == 0
    out = tmp_path / "g.onnx"
    printed = capsys.readouterr().out
    diff = float(re.search(r"max abs difference (\S+)", printed).group(1))
    assert diff <= 1e-4, printed
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "z" and session.get_outputs()[0].name == "images"
    for batch in (1, 5):  # the batch dimension is dynamic
        z = torch.randn(batch, 64, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            expected = generator(z).numpy()
        got = session.run(["images"], {"z": z.numpy()})[0]
        assert got.shape == (batch, 3, 32, 32)
        assert np.abs(got - expected).max() <= 1e-4
        assert np.abs(expected).max() > 0.5  # images of a trained model's range, not ~0


def test_interpolation_video_alone_as_mp4_and_gif(model_dir, tmp_path, monkeypatch, capsys):
    """docs/evaluation.md's command, then a GIF the same way."""
    iio = pytest.importorskip("imageio.v3", reason="the video extra is not installed")
    pytest.importorskip("imageio_ffmpeg", reason="the video extra is not installed")
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--model", model_dir, "--interpolate", "0,1", "--out", "x.mp4"]) == 0
    assert "wrote x.mp4: 30 frames at 15 fps" in capsys.readouterr().out
    video = iio.imread(tmp_path / "x.mp4")
    assert video.shape == (30, 32, 32, 3) and iio.immeta(tmp_path / "x.mp4")["fps"] == 15

    gif = tmp_path / "x.gif"
    assert main(["generate", "--model", model_dir, "--interpolate", "0,1", "--frames", "5",
                 "--out", str(gif)]) == 0
    assert iio.imread(gif, index=None).shape[:3] == (5, 32, 32)  # a 256-colour palette each
    assert not list(tmp_path.glob("*.json"))  # the video alone


def test_mp4_frames_are_the_frames_given(tmp_path):
    """H.264 is lossy, and the test generator's images are pixel noise it cannot keep: smooth
    frames (a moving colour ramp) come back within a few levels (3.1 at most, seen here), each
    nearest its own (the next is 20 levels away)."""
    iio = pytest.importorskip("imageio.v3", reason="the video extra is not installed")
    pytest.importorskip("imageio_ffmpeg", reason="the video extra is not installed")
    ramp = np.linspace(0, 1, 32)
    frames = np.stack([np.stack([np.add.outer(ramp, ramp) * 100 + 20 * t,
                                 np.tile(ramp * 200, (32, 1)), np.full((32, 32), 40 * t)], -1)
                       for t in range(5)]).astype(np.uint8)  # (5, 32, 32, 3)
    save_animation(frames, tmp_path / "ramp.mp4", fps=15)
    video = iio.imread(tmp_path / "ramp.mp4").astype(float)
    error = np.abs(video[:, None] - frames[None]).mean(axis=(2, 3, 4))  # (decoded, given)
    assert (error.diagonal() < 5).all() and (error.argmin(axis=1) == np.arange(5)).all(), error


def test_video_file_out_takes_no_seeds(model_dir, tmp_path, capsys):
    assert main(["generate", "--model", model_dir, "--seeds", "0-3", "--interpolate", "0,1",
                 "--out", str(tmp_path / "x.mp4")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hitgan: error: --out") and "without --seeds" in err


@pytest.mark.slow
def test_onnx_speed_bench_runs(capsys):
    """docs/serving.md's bench.onnx_speed command, on the tiny preset for one round."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from bench import onnx_speed

    rows = onnx_speed.main(["--preset", "hit-tiny-32", "--batches", "1,3", "--rounds", "1",
                            "--repeats", "1", "--threads", "1"])
    assert [(r.preset, r.batch) for r in rows] == [("hit-tiny-32", 1), ("hit-tiny-32", 3)]
    assert all(r.max_abs_difference <= 1e-4 and r.onnx_images_per_s > 0 for r in rows)
    assert "| hit-tiny-32 | 3 |" in capsys.readouterr().out


@pytest.mark.slow
def test_onnx_export_of_a_conditional_generator(tmp_path, capsys):
    """A class-conditional generator exports with a second input, labels (batch,) int64."""
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    G = visible_generator(num_classes=3)
    model = save_pretrained(G, tmp_path / "cond")
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "c.onnx")]) == 0
    assert float(re.search(r"max abs difference (\S+)", capsys.readouterr().out).group(1)) <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "c.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["z", "labels"]
    z = torch.randn(1, 64).repeat(3, 1)
    got = session.run(["images"], {"z": z.numpy(), "labels": np.arange(3)})[0]
    with torch.inference_mode():
        np.testing.assert_allclose(got, G(z, torch.arange(3)).numpy(), atol=1e-4)
    assert np.abs(got[0] - got[1]).max() > 0.05  # the label reaches the graph
