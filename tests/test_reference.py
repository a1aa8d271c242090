"""hitgan computes the same function as the official TF implementation."""

import numpy as np
import pytest
import torch

from hitgan.convert.official import (
    apply_rules,
    check_against_outputs,
    configs_from_meta,
    convert_official,
    discriminator_rules,
    load_npz,
)
from hitgan.models.config import PRESETS
from hitgan.models.discriminator import StyleGANDiscriminator
from hitgan.models.generator import HiTGenerator

TOL = 1e-4


@pytest.fixture(scope="module")
def reference(reference_path):
    variables, meta = load_npz(reference_path)
    gen_cfg, disc_cfg = configs_from_meta(meta)
    G, D = convert_official(variables, gen_cfg, disc_cfg)
    return variables, G, D


@pytest.mark.parametrize("key", ["generator_output_eval", "generator_output_train",
                                 "discriminator_logits"])
def test_matches_official_outputs(reference, key):
    v, G, D = reference
    diffs = check_against_outputs(v, G, D)
    assert diffs[key] <= TOL, diffs


def test_output_layout(reference):
    v, G, _ = reference
    with torch.no_grad():
        out = G.eval()(torch.from_numpy(v["z"]))
    assert out.permute(0, 2, 3, 1).shape == v["generator_output_eval"].shape


def test_eval_and_train_outputs_differ(reference):
    """The two references exercise different BatchNorm paths; a mapping that ignored the
    moving statistics would pass one of them only."""
    v, _, _ = reference
    assert np.abs(v["generator_output_eval"] - v["generator_output_train"]).max() > 0.1


# Official counts (tests/data/README.md): trainable, and with BatchNorm moving stats.
OFFICIAL_COUNTS = {
    "hit-b-128": (32_866_627, 32_885_827, 23_880_833),
    "hit-b-256": (46_217_670, 46_236_614, 28_862_593),
    "hit-b-1024": (88_216_300, 88_235_756, 29_008_673),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS))
def test_official_parameter_counts(name):
    trainable, everything, disc = OFFICIAL_COUNTS[name]
    preset = PRESETS[name]
    with torch.device("meta"):
        G, D = HiTGenerator(preset.generator), StyleGANDiscriminator(preset.discriminator)
    n = sum(p.numel() for p in G.parameters())
    stats = sum(b.numel() for k, b in G.named_buffers() if k.endswith(("running_mean",
                                                                        "running_var")))
    assert (n, n + stats) == (trainable, everything)
    assert sum(p.numel() for p in D.parameters()) == disc


def test_converter_names_missing_variable(reference_path):
    variables, meta = load_npz(reference_path)
    gen_cfg, _ = configs_from_meta(meta)
    del variables["generator/blocks/1/1/attention_layer/key_dense/kernel"]
    with pytest.raises(ValueError, match="blocks/1/1/attention_layer/key_dense/kernel"):
        convert_official(variables, gen_cfg, None)


def test_converter_rejects_wrong_config(reference_path):
    variables, meta = load_npz(reference_path)
    _, disc_cfg = configs_from_meta(meta)
    wider = type(disc_cfg)(resolution=64, channels=(16, 16, 32, 32, 64))
    with pytest.raises(ValueError, match="shape"):
        convert_official(variables, None, wider)
    # fewer layers than the weights hold: the leftover variables are reported
    meta["generator_config"]["num_layers_per_block"] = [1, 0, 1, 1]
    fewer, _ = configs_from_meta(meta)
    with pytest.raises(ValueError, match="not used"):
        convert_official(variables, fewer, None)


def test_converter_rules_cover_every_tensor(reference_path):
    variables, meta = load_npz(reference_path)
    _, disc_cfg = configs_from_meta(meta)
    D = StyleGANDiscriminator(disc_cfg)
    used = apply_rules(D, discriminator_rules(D), variables, "discriminator")
    assert used == {k for k in variables if k.startswith("discriminator/")}
