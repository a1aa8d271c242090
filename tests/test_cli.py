"""The hitgan command: info, generate, convert-official, and one clear line on bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hitgan.cli import main, parse_seeds
from hitgan.models.io import from_pretrained


def test_parse_seeds():
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds("a-b")


def test_info_prints_stages(capsys):
    assert main(["info", "--preset", "hit-b-128", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "32,866,627" in out and "stage 4 (128x128, MLP)" in out and "28.298" in out
    assert "activations saved for backward at batch 2" in out


def test_generate_random_init(tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", "--seeds", "0-5", "--batch", "4", "--out", str(out)]) == 0
    assert len(list(out.glob("seed*.png"))) == 6
    assert Image.open(out / "seed0003.png").size == (32, 32)
    record = json.loads((out / "generate.json").read_text())
    assert record["seeds"] == list(range(6)) and record["preset"] == "hit-tiny-32"
    # same seed -> same image, independent of batching
    again = tmp_path / "again"
    assert main(["generate", "--seeds", "3", "--out", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(out / "seed0003.png")),
                          np.asarray(Image.open(again / "seed0003.png")))


def test_convert_official_then_generate(tmp_path, reference_path, capsys):
    out = tmp_path / "conv"
    assert main(["convert-official", str(reference_path), "--out", str(out)]) == 0
    G = from_pretrained(out / "generator")
    assert G.config.resolution == 64 and from_pretrained(out / "discriminator") is not None
    ref = np.load(reference_path)
    with torch.no_grad():
        got = G.eval()(torch.from_numpy(ref["z"])).permute(0, 2, 3, 1).numpy()
    assert np.abs(got - ref["generator_output_eval"]).max() <= 1e-4
    assert main(["generate", "--model", str(out / "generator"), "--seeds", "0-1",
                 "--out", str(tmp_path / "g")]) == 0


@pytest.mark.parametrize(("argv", "needle"), [
    (["generate", "--model", "/nonexistent/model"], "no such directory"),
    (["generate", "--seeds", "x"], "--seeds"),
    (["convert-official", "/nonexistent.npz", "--out", "o"], "/nonexistent.npz"),
    (["generate", "--batch", "0"], "--batch 0"),
])
def test_errors_are_one_clear_line(argv, needle, capsys):
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("hitgan: error:") and needle in err and "\n" not in err


def test_convert_without_meta_needs_preset(tmp_path, capsys):
    np.savez(tmp_path / "v.npz", **{"generator/dense_layer/0/kernel": np.zeros((2, 2))})
    assert main(["convert-official", str(tmp_path / "v.npz"), "--out", str(tmp_path)]) == 1
    assert "--preset" in capsys.readouterr().err


def test_train_without_batch_flag_and_from_a_config_file(tmp_path, capsys):
    """The preset's batch applies when --batch is left out, on the command line and with
    --config (docs/training.md's `hitgan train --config options.json`)."""
    out = tmp_path / "run"
    assert main(["train", "--data", "mnist", "--out", str(out), "--steps", "1",
                 "--workers", "0"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["batch"] == 16  # auto recipe
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"steps": 1, "batch": 4, "workers": 0,
                                   "out": str(tmp_path / "from-file")}))
    assert main(["train", "--config", str(options)]) == 0
    record = json.loads((tmp_path / "from-file" / "config.json").read_text())
    assert record["train"]["batch"] == 4
    assert "done: step 1" in capsys.readouterr().out


def test_generate_caps_the_grid(tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", "--seeds", "0-69", "--batch", "35", "--out", str(out)]) == 0
    assert len(list(out.glob("seed*.png"))) == 70
    assert Image.open(out / "grid.png").size == (8 * 34 - 2, 8 * 34 - 2)  # 64 of 32 px
    assert "(the first 64)" in capsys.readouterr().out
    assert main(["generate", "--seeds", "0-5", "--grid", "4", "--out", str(out)]) == 0
    assert Image.open(out / "grid.png").size == (2 * 34 - 2, 2 * 34 - 2)
    assert main(["generate", "--grid", "0", "--out", str(out)]) == 1
    assert "--grid 0" in capsys.readouterr().err
