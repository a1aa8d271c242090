from pathlib import Path

import pytest
import torch

# Tensors made by the official TensorFlow code; where they came from: tests/data/README.md
REFERENCE = Path(__file__).with_name("data") / "hit_reference_a.npz"


@pytest.fixture(scope="session")
def reference_path() -> Path:
    assert REFERENCE.exists(), f"{REFERENCE} missing: it is part of the repository (git checkout)"
    return REFERENCE


@pytest.fixture
def freezing_seen(monkeypatch) -> list[bool]:
    """torch.compile replaced by a pass-through that records, at each call, whether inductor's
    freezing is on (what a real compile would read)."""
    import torch._inductor.config as inductor_config

    seen: list[bool] = []

    def fake_compile(model):
        def compiled(*args):
            seen.append(inductor_config.freezing)
            return model(*args)
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    return seen
