"""The hitgan command: info, generate, convert-official, and one clear line on bad input."""

import dataclasses
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hitgan.cli import build_parser, main, parse_seeds
from hitgan.models.io import from_pretrained
from hitgan.training.config import TrainConfig


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
    assert record["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    # same seed -> same image, independent of batching
    again = tmp_path / "again"
    assert main(["generate", "--seeds", "3", "--device", "cpu", "--out", str(again)]) == 0
    assert json.loads((again / "generate.json").read_text())["device"] == "cpu"
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
    (["generate", "--device", "gpu"], "--device gpu: not a device"),
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


def _option_helps(text: str) -> dict[str, str]:
    """``--help`` output -> {long flag: its help}. An option's line starts with two spaces and
    a dash; deeper-indented lines after it continue its help."""
    helps: dict[str, str] = {}
    flag = None
    for line in text.splitlines():
        if line.startswith("  -"):
            invocation, _, rest = line.strip().partition("  ")
            flag = next(w for w in invocation.replace(",", " ").split() if w.startswith("--"))
            helps[flag] = rest.strip()
        elif flag is not None and line.startswith("    "):
            helps[flag] = f"{helps[flag]} {line.strip()}".strip()
        else:
            flag = None
    return helps


def _help_of(argv, capsys, monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return _option_helps(capsys.readouterr().out)


def test_every_train_option_has_a_help_sentence(capsys, monkeypatch):
    """`hitgan train --help`: every option says what it does (from TrainConfig's fields), not
    only its default."""
    helps = _help_of(["train"], capsys, monkeypatch)
    fields = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig)}
    assert set(helps) == fields | {"--help", "--config", "--recipe"}
    for flag, text in helps.items():
        sentence = re.sub(r"Default: .+\.$", "", text).strip()
        assert len(sentence.split()) >= 5 and not sentence.lower().startswith("default"), (
            f"{flag}: {text!r}")
        if flag in fields:
            assert re.search(r"Default: .+\.$", text), f"{flag}: {text!r}"
    assert "(official: 256)" in helps["--batch"] and "Default: 32." in helps["--batch"]
    assert "Default: unset." in helps["--norm"] and "Default: off." in helps["--cond"]


@pytest.mark.parametrize("command", ["info", "generate", "serve", "export", "stats", "eval",
                                     "convert-official", "dataset"])
def test_every_option_of_the_other_commands_has_help(command, capsys, monkeypatch):
    helps = _help_of([command], capsys, monkeypatch)
    assert len(helps) > 2
    for flag, text in helps.items():
        assert len(text.split()) >= 3 and not text.lower().startswith("default"), (
            f"{command} {flag}: {text!r}")


def test_train_flags_take_type_and_choices_from_the_config(capsys):
    args = build_parser().parse_args([
        "train", "--betas", "0.5", "0.9", "--max-minutes", "2", "--batch-per-device", "4",
        "--no-flip", "--norm", "layer", "--lr-g", "3e-4"])
    assert args.betas == [0.5, 0.9] and isinstance(args.max_minutes, float)
    assert args.batch_per_device == 4 and args.flip is False and args.norm == "layer"
    assert args.lr_g == 3e-4 and args.cond is None and args.steps is None  # unset: the config's
    for bad in (["--norm", "group"], ["--penalty", "r3"], ["--precision", "fp8"],
                ["--batch-per-device", "1.5"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train", *bad])
        assert bad[0] in capsys.readouterr().err


def test_grey_data_trains_a_one_channel_generator_with_grey_samples(tmp_path, capsys):
    """A data set of grey RGB files (R = G = B, as users store them): `hitgan train` says it
    read them as grey, G and D get one channel, and `hitgan generate` writes grey images (R = G
    = B read back as RGB). One colour image among them keeps RGB."""
    rng = np.random.default_rng(0)
    grey = tmp_path / "grey"
    grey.mkdir()
    for i in range(8):
        g = rng.integers(0, 256, (32, 32, 1), dtype=np.uint8)
        Image.fromarray(np.repeat(g, 3, axis=-1)).save(grey / f"{i}.png")
    run = tmp_path / "run"
    assert main(["train", "--data", str(grey), "--out", str(run), "--steps", "2", "--batch", "4",
                 "--workers", "0"]) == 0
    assert "data: channels=1:" in capsys.readouterr().out
    record = json.loads((run / "config.json").read_text())
    assert record["generator"]["out_channels"] == 1 and record["discriminator"]["in_channels"] == 1
    assert Image.open(run / "reals.png").mode == "L"
    out = tmp_path / "gen"
    assert main(["generate", "--model", str(run), "--seeds", "0-3", "--out", str(out)]) == 0
    rgb = np.asarray(Image.open(out / "seed0002.png").convert("RGB")).astype(int)
    assert rgb.std() > 0
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()

    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(grey / "colour.png")
    assert main(["train", "--data", str(grey), "--out", str(tmp_path / "rgb"), "--steps", "1",
                 "--batch", "4", "--workers", "0"]) == 0
    assert "data: channels=3:" in capsys.readouterr().out
    assert json.loads((tmp_path / "rgb" / "config.json").read_text())["generator"][
        "out_channels"] == 3


def test_documented_precision_comparison(tmp_path, capsys):
    """docs/training.md's fp32/bf16 step comparison of the auto recipe, as written but for its
    step count (2, not a budget of minutes): each precision trains and is the one recorded."""
    text = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    command = re.search(r"`OMP_NUM_THREADS=1 hitgan train (.*?)` \(and `bf16`\)", text, re.S)
    assert command, "docs/training.md: the precision comparison's command is gone"
    argv = shlex.split(command.group(1))
    assert argv[argv.index("--steps") + 1] == "1000000" and argv[-1] == "fp32"
    argv[argv.index("--steps") + 1] = "2"
    for precision in ("fp32", "bf16"):
        run = tmp_path / precision
        argv[argv.index("--out") + 1], argv[-1] = str(run), precision
        assert main(["train", *argv]) == 0
        assert "done: step 2" in capsys.readouterr().out
        assert json.loads((run / "config.json").read_text())["train"]["precision"] == precision
