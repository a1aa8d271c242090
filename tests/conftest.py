from pathlib import Path

import pytest

# Tensors made by the official TensorFlow code; where they came from: tests/data/README.md
REFERENCE = Path(__file__).with_name("data") / "hit_reference_a.npz"


@pytest.fixture(scope="session")
def reference_path() -> Path:
    assert REFERENCE.exists(), f"{REFERENCE} missing: it is part of the repository (git checkout)"
    return REFERENCE
