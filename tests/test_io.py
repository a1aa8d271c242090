"""save_pretrained / from_pretrained: exact, pickle-free, and loud about bad files."""

import json

import pytest
import torch

from hitgan.models.config import PRESETS
from hitgan.models.discriminator import StyleGANDiscriminator
from hitgan.models.generator import HiTGenerator
from hitgan.models.io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    WeightsError,
    from_pretrained,
    save_pretrained,
)

TINY = PRESETS["hit-tiny-32"]


@pytest.fixture
def trained_generator():
    torch.manual_seed(0)
    G = HiTGenerator(TINY.generator).train()
    G(torch.randn(4, TINY.generator.latent_dim))  # non-trivial BatchNorm statistics
    return G.eval()


def test_round_trip_bit_exact(tmp_path, trained_generator):
    save_pretrained(trained_generator, tmp_path / "g")
    loaded = from_pretrained(tmp_path / "g")
    assert isinstance(loaded, HiTGenerator) and loaded.config == trained_generator.config
    a, b = trained_generator.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    z = torch.randn(2, TINY.generator.latent_dim)
    with torch.no_grad():
        assert torch.equal(trained_generator(z), loaded.eval()(z))


def test_discriminator_round_trip(tmp_path):
    D = StyleGANDiscriminator(TINY.discriminator)
    save_pretrained(D, tmp_path / "d")
    loaded = from_pretrained(tmp_path / "d")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in D.state_dict().items())


def test_files_are_safetensors_and_json(tmp_path, trained_generator):
    save_pretrained(trained_generator, tmp_path)
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["class"] == "HiTGenerator"
    header_len = int.from_bytes((tmp_path / WEIGHTS_NAME).read_bytes()[:8], "little")
    assert header_len < 100_000  # a safetensors header, not a pickle


def test_tampered_weights_refused(tmp_path, trained_generator):
    save_pretrained(trained_generator, tmp_path)
    path = tmp_path / WEIGHTS_NAME
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF  # flip bits inside a tensor
    path.write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match=rf"{WEIGHTS_NAME}.*checksum"):
        from_pretrained(tmp_path)


@pytest.mark.parametrize("keep", [0, 5, 200, -100])
def test_truncated_weights_refused(tmp_path, trained_generator, keep):
    save_pretrained(trained_generator, tmp_path)
    path = tmp_path / WEIGHTS_NAME
    raw = path.read_bytes()
    path.write_bytes(raw[:keep])
    with pytest.raises(WeightsError, match=rf"{WEIGHTS_NAME}.*(truncated or corrupt)"):
        from_pretrained(tmp_path)


def test_config_mismatch_names_tensor_and_shapes(tmp_path, trained_generator):
    save_pretrained(trained_generator, tmp_path)
    data = json.loads((tmp_path / CONFIG_NAME).read_text())
    data["config"]["latent_dim"] = 32
    (tmp_path / CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(WeightsError, match=r"tensor to_grid.weight: file has shape \(8192, 64\), "
                                           r"config needs \(8192, 32\)"):
        from_pretrained(tmp_path)


def test_invalid_or_missing_config(tmp_path, trained_generator):
    with pytest.raises(WeightsError, match=r"no config\.json"):
        from_pretrained(tmp_path)
    save_pretrained(trained_generator, tmp_path)
    data = json.loads((tmp_path / CONFIG_NAME).read_text())
    data["config"]["heads"] = [4, 3, 2]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(WeightsError, match=r"heads\[1\]=3"):
        from_pretrained(tmp_path)


def test_save_over_existing_keeps_a_loadable_model(tmp_path, trained_generator, monkeypatch):
    """A failed save leaves the previous files intact (atomic writes)."""
    save_pretrained(trained_generator, tmp_path)
    before = (tmp_path / WEIGHTS_NAME).read_bytes()
    import hitgan.models.io as io

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(HiTGenerator(TINY.generator), tmp_path)
    assert (tmp_path / WEIGHTS_NAME).read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))
    from_pretrained(tmp_path)
