from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "hit_reference_a.npz"


@pytest.fixture(scope="session")
def reference_path() -> Path:
    assert REFERENCE.exists(), (
        f"{REFERENCE} missing: the official reference data lives in ../shared/reference/ "
        "next to the project root")
    return REFERENCE
