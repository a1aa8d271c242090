"""bench.fid_speed and bench.fid_profile at toy size, eager extractors only (compiling takes
tens of seconds: the compiled path's behaviour is tested in test_inception.py)."""

import json

import pytest

from bench import fid_profile, fid_speed


@pytest.mark.slow
def test_fid_speed_rows(tmp_path, capsys):
    out = tmp_path / "speed.json"
    fid_speed.main(["--images", "8", "--batch", "4", "--rounds", "1", "--extractors",
                    "reference,fast", "--threads", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "reference" in printed and "fast" in printed
    result = json.loads(out.read_text())
    # the convolutions' multiply-adds by kernel add up to the FLOPs torch counts (2 per MAC)
    assert sum(result["macs_by_kernel"].values()) * 2 == round(result["gflop_per_image"] * 1e9)
    assert next(iter(result["macs_by_kernel"])) == "3x3/1"  # the largest share
    assert "3x3/1 2.068 G (36.2%)" in printed and "ceiling: the fp32 matmul peak is " in printed


def test_fid_profile_tables(capsys):
    fid_profile.main(["--batch", "2", "--rows", "3", "--no-compile"])
    printed = capsys.readouterr().out
    assert "reference network" in printed and "fast extractor" in printed
