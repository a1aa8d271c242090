"""Config validation: every bad value is refused with the field's name and a fix."""

import dataclasses
import json

import pytest

from hitgan.models.config import PRESETS, DiscriminatorConfig, GeneratorConfig, get_preset

BASE = PRESETS["hit-tiny-32"].generator


def _gen(**changes):
    return dataclasses.replace(BASE, **changes)


@pytest.mark.parametrize(("changes", "field", "hint"), [
    ({"heads": (4, 3, 2)}, "heads[1]", "must divide widths[1]=64"),
    ({"heads": (4, 2, 2), "widths": (128, 62, 32)}, "widths[1]", "multiple of 4"),
    ({"heads": (4, 1, 2), "widths": (128, 64, 32)}, "heads[1]", "even"),
    ({"patch_sizes": (3, 4, None)}, "patch_sizes[0]", "divide the stage grid (8x8)"),
    ({"patch_sizes": (4, None, 4)}, "patch_sizes[2]", "before MLP-only"),
    ({"patch_sizes": (4, 4, 4)}, "patch_sizes", "last stage must be MLP-only"),
    ({"resolution": 48}, "resolution", "set resolution=32"),
    ({"resolution": 64}, "resolution", "unsupported"),
    ({"latent_dim": -5}, "latent_dim", "positive"),
    ({"widths": (128, -64, 32)}, "widths[1]", "positive"),
    ({"layers": (1, -1, 1)}, "layers[1]", ">= 0"),
    ({"layers": (1, 1)}, "layers", "one entry per stage"),
    ({"attention": "linear"}, "attention", "multi_query"),
    ({"norm": "group"}, "norm", "batch"),
    ({"upsample": "nearest"}, "upsample", "bilinear"),
    ({"patch_sizes": (0, 4, None)}, "patch_sizes[0]", "positive"),
])
def test_generator_config_errors(changes, field, hint):
    with pytest.raises(ValueError) as info:
        _gen(**changes)
    msg = str(info.value)
    assert msg.startswith(f"{field}="), msg
    assert hint in msg, msg


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"resolution": 96}, "resolution"),
    ({"resolution": 2048}, "resolution"),
    ({"resolution": 32, "channels": (64, 128)}, "channels"),
    ({"resolution": 32, "channels": (64, 128, 0, 4)}, "channels[2]"),
    ({"channel_multiplier": 0}, "channel_multiplier"),
])
def test_discriminator_config_errors(kwargs, field):
    with pytest.raises(ValueError) as info:
        DiscriminatorConfig(**kwargs)
    assert str(info.value).startswith(f"{field}="), info.value


def test_official_discriminator_channel_table():
    assert DiscriminatorConfig(resolution=256, channel_multiplier=2).channel_table == {
        256: 128, 128: 256, 64: 512, 32: 512, 16: 512, 8: 512, 4: 512}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_json(name):
    preset = PRESETS[name]
    for cfg in (preset.generator, preset.discriminator):
        data = json.loads(json.dumps(cfg.to_dict()))
        assert type(cfg).from_dict(data) == cfg


def test_unknown_field_and_preset_are_named():
    with pytest.raises(ValueError, match=r"unknown field.*'depth'"):
        GeneratorConfig.from_dict({**BASE.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="hit-b-128"):
        get_preset("hit-b-512")


def test_official_defaults():
    cfg = GeneratorConfig()
    assert (cfg.attention, cfg.norm, cfg.mlp_ratio, cfg.latent_tokens) == (
        "multi_query", "batch", 4, 16)
    assert PRESETS["hit-b-128"].generator == cfg
