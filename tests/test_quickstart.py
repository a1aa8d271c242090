"""The README's first command, scripts/quickstart.sh, as written (its setup step skipped: the
test runs inside the environment it makes), at toy size through its environment variables."""

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole script end to end
ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_trains_samples_and_prints_fid(tmp_path):
    env = {**os.environ, "SKIP_SETUP": "1", "MINUTES": "0.05", "FID_SAMPLES": "8",
           "RUN": str(tmp_path / "run"), "OUT": str(tmp_path / "out"),
           "HOME": str(tmp_path)}  # the statistics cache goes under HOME
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "quickstart.sh")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "auto: penalty_every=16" in proc.stdout  # the recipe says what it chose
    assert (tmp_path / "out" / "grid.png").exists()
    assert len(list((tmp_path / "out").glob("seed*.png"))) == 64
    fid_line = next(line for line in proc.stdout.splitlines() if line.startswith("fid8"))
    assert float(fid_line.split()[1]) > 0
    record = json.loads((tmp_path / "out" / "metrics.jsonl").read_text())
    assert record["num_samples"] == 8
    # README's legibility check of the quickstart's run (a tiny classifier here)
    from bench.quality import legible

    result = legible.main(["--run", str(tmp_path / "run"), "--samples", "8", "--epochs", "1",
                           "--max-images", "200"])
    assert result["samples"] == 8 and 0 <= result["generated"]["legible"] <= 1
