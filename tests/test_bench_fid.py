"""bench.fid_speed and bench.fid_profile at toy size, eager extractors only (compiling takes
tens of seconds: the compiled path's behaviour is tested in test_inception.py)."""

import json

from bench import fid_profile, fid_speed


def test_fid_speed_rows(tmp_path, capsys):
    out = tmp_path / "speed.json"
    fid_speed.main(["--images", "8", "--batch", "4", "--rounds", "1", "--extractors",
                    "reference,fast", "--threads", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "reference" in printed and "fast" in printed
    assert out.stat().st_size > 0 and json.loads(out.read_text())


def test_fid_profile_tables(capsys):
    fid_profile.main(["--batch", "2", "--rows", "3", "--no-compile"])
    printed = capsys.readouterr().out
    assert "reference network" in printed and "fast extractor" in printed
