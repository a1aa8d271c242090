"""`python -m bench` runs every part and merges their JSON. Each part's own smoke test runs it for
real (tests/test_bench_*.py); here every part is replaced by a stand-in that checks the suite's
arguments with the part's real parser and writes a result, so the orchestration is tested fast."""

import json

import pytest

from bench import __main__ as suite
from bench import complexity, generator_throughput, precision, train_step

PARSERS = {"inference": generator_throughput.parse_args, "train": train_step.parse_args,
           "complexity": complexity.parse_args, "precision": precision.parse_args}


@pytest.mark.parametrize("smoke", [True, False])
def test_suite_runs_every_part_and_merges_their_json(tmp_path, capsys, monkeypatch, smoke):
    calls = []

    def stand_in(part):
        def main(argv):
            args = PARSERS[part](argv)  # the part accepts what the suite passes
            calls.append((part, args))
            with open(args.json, "w") as f:
                json.dump({"part": part, "machine": {"hitgan": "x"}}, f)
        return main

    monkeypatch.setattr(suite, "MAINS", {p: stand_in(p) for p in suite.PARTS})
    out = tmp_path / "results.json"
    results = suite.main(["--json", str(out), "--plot-dir", str(tmp_path)]
                         + (["--smoke"] if smoke else []))
    assert [part for part, _ in calls] == list(suite.PARTS)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(results))
    assert {p: r["part"] for p, r in saved["parts"].items()} == {p: p for p in suite.PARTS}
    assert not list(tmp_path.glob("results.*.json"))  # per-part files merged and removed
    args = dict(calls)
    assert args["complexity"].plot == str(tmp_path / "complexity.png")
    assert args["precision"].plot == str(tmp_path / "precision.png")
    tiny = ["hit-tiny-32"] if smoke else ["hit-tiny-32", "hit-small-64", "hit-b-128"]
    assert [p for p in args["inference"].presets] == tiny
    assert [p for p in args["train"].presets] == tiny
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
