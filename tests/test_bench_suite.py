"""`python -m bench --smoke` runs every part once on the tiny preset (no timing assertions)."""

import json

import pytest

from bench import __main__ as suite


@pytest.mark.slow  # a minute: every part again, each of which has its own fast smoke test
def test_suite_smoke_runs_every_part(tmp_path, capsys):
    out = tmp_path / "results.json"
    results = suite.main(["--smoke", "--json", str(out), "--plot-dir", str(tmp_path)])
    saved = json.loads(out.read_text())
    assert set(saved["parts"]) == set(suite.PARTS) == set(results["parts"])
    for part in suite.PARTS:
        assert saved["parts"][part]["machine"]["hitgan"], part
    assert saved["parts"]["inference"]["rows"][0]["images_per_s"] > 0
    assert (tmp_path / "complexity.png").stat().st_size > 0
    assert (tmp_path / "precision.png").stat().st_size > 0
    assert not list(tmp_path.glob("results.*.json"))  # per-part files merged and removed
    printed = capsys.readouterr().out
    assert all(f"==== {part}" in printed for part in suite.PARTS)


@pytest.mark.parametrize("argv, message", [
    (["--parts", "inference,speed"], "unknown ['speed']"),
    (["--train-batch", "0"], "--train-batch must be >= 1"),
    (["--official", "/nowhere"], "go together"),
])
def test_bad_options(capsys, argv, message):
    with pytest.raises(SystemExit):
        suite.parse_args(argv)
    assert message in capsys.readouterr().err
