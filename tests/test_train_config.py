"""Training options: official defaults, precedence, and errors that name the option."""

import json

import pytest
import torch

from hitgan.models.config import get_preset
from hitgan.training.config import PRESET_DEFAULTS, RECIPES, TrainConfig, build_config


def test_official_defaults():
    cfg = TrainConfig()
    assert cfg.betas == (0.0, 0.99) and cfg.loss == "non-saturating"
    assert (cfg.penalty, cfg.penalty_cost, cfg.penalty_every) == ("r1", 10.0, 1)
    assert (cfg.ema_decay, cfg.ema_start, cfg.bcr_cost) == (0.999, 10, 10.0)
    assert cfg.augment == "color,translation,cutout"


@pytest.mark.parametrize(("preset", "lr", "bcr"), [
    ("hit-b-128", 1e-4, False), ("hit-b-256", 5e-5, True), ("hit-b-1024", 5e-5, True)])
def test_preset_defaults_follow_the_official_recipe(preset, lr, bcr, tmp_path):
    cfg = build_config({"preset": preset})
    assert (cfg.lr_g, cfg.lr_d, cfg.bcr, cfg.batch) == (lr, lr, bcr, 256)


def test_recipes():
    cfg = build_config({}, recipe="imagenet128")
    assert (cfg.crop, cfg.crop_proportion, cfg.preset) == ("random", 0.875, "hit-b-128")
    assert build_config({}, recipe="ffhq1024").preset == "hit-b-1024"
    assert set(RECIPES) == {"imagenet128", "celebahq256", "ffhq256", "ffhq1024"}
    assert set(PRESET_DEFAULTS) >= {"hit-b-128", "hit-b-256", "hit-b-1024"}


def test_precedence_file_then_flags(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"steps": 7, "lr-g": 0.5, "batch": 8}))
    cfg = build_config({"steps": 9}, str(path))
    assert (cfg.steps, cfg.lr_g, cfg.batch) == (9, 0.5, 8)


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"preset": "hit-x"}, "preset='hit-x'"), ({"steps": 0}, "steps=0"),
    ({"loss": "wgan"}, "loss='wgan'"), ({"augment": "color,blur"}, "['blur']"),
    ({"precision": "fp8"}, "precision"), ({"ema_decay": 1.0}, "ema_decay"),
    ({"lrg": 1}, "unknown training option"), ({"ada_target": 1.0}, "ada_target=1.0"),
    ({"ada_target": 0.6, "diffaug": True}, "choose one"), ({"ada_kimg": 0}, "ada_kimg=0")])
def test_errors_name_the_option(overrides, needle):
    with pytest.raises(ValueError, match=None) as info:
        build_config(overrides)
    assert needle in str(info.value)


def test_micro_batches():
    cfg = TrainConfig(batch=32, batch_per_device=4)
    assert cfg.micro_batch(2) == (4, 4)
    assert TrainConfig(batch=32).micro_batch(4) == (8, 1)
    with pytest.raises(ValueError, match="batch=32"):
        TrainConfig(batch=32, batch_per_device=5).micro_batch(1)


def test_config_file_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        build_config({}, str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="invalid JSON"):
        build_config({}, str(tmp_path / "bad.json"))


def test_auto_recipe_for_small_presets(monkeypatch):
    from hitgan.training import recipe

    monkeypatch.setattr(recipe, "fast_bf16", lambda device: (False, "CPU has no AMX"))
    report: list[str] = []
    cfg = build_config({"preset": "hit-tiny-32", "data": "mnist"}, report=report)
    assert (cfg.precision, cfg.penalty_every, cfg.d_width, cfg.batch) == ("fp32", 16, 0.5, 16)
    assert (cfg.norm, cfg.output_init, cfg.ema_kimg, cfg.ema_rampup) == ("layer", "data", 5, 0.05)
    assert cfg.mode_seeking == 0.03 and cfg.generator_config().norm == "layer"
    assert cfg.generator_config().upsample == "bilinear"
    options = [line.split("=")[0] for line in report]
    assert options == [f"auto: {c.option}" for c in recipe.auto_recipe(
        "hit-tiny-32", torch.device("cpu"))] + ["data: channels", "data: ada_target"]
    assert all(line.count(": ") >= 2 for line in report)  # each with its reason
    monkeypatch.setattr(recipe, "fast_bf16", lambda device: (True, "CPU has amx_bf16"))
    report = []
    cfg = build_config({"data": "mnist", "d_width": 1.0}, report=report)  # a flag wins
    assert cfg.precision == "bf16" and cfg.d_width == 1.0
    assert any("[overridden: d_width=1.0]" in line for line in report)
    report = []
    cfg = build_config({"data": "mnist", "ema_decay": 0.99}, report=report)  # a decay, no kimg
    assert (cfg.ema_decay, cfg.ema_kimg, cfg.ema_rampup) == (0.99, None, None)
    assert any("[overridden: ema_kimg=None]" in line for line in report)
    official = build_config({"data": "mnist"}, recipe="official")
    assert (official.penalty_every, official.penalty_cost, official.d_width) == (1, 10.0, 1.0)
    assert official.output_init == "official" and official.channels == 1  # read off the data
    assert official.mode_seeking == 0
    assert official.generator_config() == get_preset("hit-tiny-32").generator  # the official G
    assert build_config({"data": "mnist", "channels": 3}, report=(r := [])).channels == 3
    assert [line.split("=")[0] for line in r if line.startswith("data:")] == [
        "data: ada_target"]  # a flag: channels not read
    assert build_config({"preset": "hit-b-128"}, recipe="auto", report=(r := [])).d_width == 1
    assert [line.split("=")[0] for line in r] == ["data: channels"]  # 128 px: official recipe
    with pytest.raises(ValueError, match="--recipe 'fast'"):
        build_config({}, recipe="fast")


def test_auto_recipe_augments_small_sets_adaptively(tmp_path):
    """Below 5,000 images the auto recipe turns on ADA (target 0.6) and says why; the 5,000
    digits, --diffaug, another recipe or an explicit --ada-target keep theirs."""
    from PIL import Image

    for i in range(6):
        Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
    report: list[str] = []
    assert build_config({"data": str(tmp_path)}, report=report).ada_target == 0.6
    assert any(line.startswith(f"data: ada_target=0.6: {tmp_path}: 6 images, fewer than "
                               "5,000: StyleGAN2-ADA") for line in report)
    report = []
    assert build_config({"data": "mnist"}, report=report).ada_target is None
    assert any(line.startswith("data: ada_target=None: mnist: 5,000 images: no augmentation")
               for line in report)
    cfg = build_config({"data": str(tmp_path), "diffaug": True})
    assert cfg.diffaug and cfg.ada_target is None
    assert build_config({"data": str(tmp_path)}, recipe="official").ada_target is None
    report = []
    assert build_config({"data": str(tmp_path), "ada_target": 0.7},
                        report=report).ada_target == 0.7
    assert any("[overridden: ada_target=0.7]" in line for line in report)


def test_auto_recipe_seeks_modes():
    """The auto recipe adds mode seeking at 0.03, conditional or not (docs/training.md); a flag
    or the official recipe turns it off, and an odd micro-batch says how."""
    report: list[str] = []
    cfg = build_config({"data": "mnist", "cond": True}, report=report)
    assert cfg.mode_seeking == 0.03 and cfg.micro_batch(1) == (16, 1)
    assert any(line.startswith("auto: mode_seeking=0.03: MSGAN") for line in report)
    assert build_config({"data": "mnist"}).mode_seeking == 0.03
    assert build_config({"data": "mnist", "cond": True, "mode_seeking": 0}).mode_seeking == 0
    assert build_config({"data": "mnist", "cond": True}, recipe="official").mode_seeking == 0
    odd = build_config({"data": "mnist", "cond": True, "batch": 6})
    with pytest.raises(ValueError, match=r"batch_per_device \(3\) even, or turn it off "
                                         "with --mode-seeking 0"):
        odd.micro_batch(2)


def test_discriminator_width():
    d = TrainConfig(preset="hit-tiny-32", d_width=0.5).discriminator_config()
    assert d.channels == (32, 64, 128, 128)
    assert TrainConfig(preset="hit-b-128").discriminator_config().channels is None
    with pytest.raises(ValueError, match="d_width=0"):
        TrainConfig(d_width=0)


def test_minibatch_stddev_needs_whole_groups():
    """D's minibatch standard deviation takes groups of 4: a micro-batch that is not a multiple
    says so at start-up (not mid-run), and names the flag that turns it off."""
    assert TrainConfig(preset="hit-tiny-32", d_mbstd=True, batch=12).micro_batch(1) == (12, 1)
    assert TrainConfig(preset="hit-tiny-32", d_mbstd=True, batch=2).micro_batch(1) == (2, 1)
    with pytest.raises(ValueError, match=r"batch_per_device \(6\) a multiple of 4.*--no-d-mbstd"):
        TrainConfig(preset="hit-tiny-32", d_mbstd=True, batch=12).micro_batch(2)
