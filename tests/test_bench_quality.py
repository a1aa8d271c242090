"""bench.quality end to end at toy size: a hitgan variant and the DCGAN baseline trained for a
few seconds each, FID of their snapshots, the table, JSON and plot (one snapshot each: every FID
costs two 2048x2048 eigendecompositions, seconds on a 2-core CPU)."""

import json

import pytest
import torch
from PIL import Image

from bench import quality
from bench.baseline import BaselineConfig, DCGANDiscriminator, DCGANGenerator


def test_parse_variant():
    assert quality.parse_variant("fast:penalty_every=16,d_width=0.5,loss=rpgan") == (
        "fast", {"penalty_every": 16, "d_width": 0.5, "loss": "rpgan"})
    with pytest.raises(ValueError, match="OPT=VALUE"):
        quality.parse_variant("fast:penalty_every")
    with pytest.raises(ValueError, match="name"):
        quality.parse_variant(":lr_g=1")



def test_which_runs(capsys):
    assert [n for n, _ in quality.parse_args([]).variants] == ["hitgan"]
    assert quality.parse_args(["--baseline-only"]).variants == []
    for clash in (["--no-baseline"], ["--variant", "x:batch=8"]):
        with pytest.raises(SystemExit):
            quality.parse_args(["--baseline-only", *clash])
        assert "--baseline-only trains the baseline alone" in capsys.readouterr().err


@pytest.mark.parametrize("resolution", [32, 64])
def test_baseline_shapes(resolution):
    cfg = BaselineConfig(resolution=resolution)
    images = DCGANGenerator(cfg)(torch.randn(2, cfg.latent_dim))
    assert images.shape == (2, 3, resolution, resolution) and images.abs().max() <= 1
    assert DCGANDiscriminator(cfg)(images).shape == (2, 1)


def test_smoke(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(16):
        arr = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(i)) * 255
        Image.fromarray(arr.to(torch.uint8).numpy()).save(data / f"{i}.png")
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    runs = quality.main(["--data", str(data), "--minutes", "0.03", "--points", "1",
                         "--clock", "cpu", "--threads", "1",
                         "--fid-samples", "4", "--cache-dir",
                         str(tmp_path / "cache"), "--out", str(out),
                         "--variant", "fast:penalty_every=4,d_width=0.5,batch=4,ema_decay=0.999,"
                         "ema_start=0", "--score-g"])
    assert [r.name for r in runs] == ["fast", "fast (G)", quality.BASELINE]
    ema, raw = runs[0].points[0], runs[1].points[0]  # one run, scored twice
    assert ema["step"] == raw["step"] and ema["fid"] != raw["fid"]
    for run in runs:
        assert run.steps >= 1 and [p["samples"] for p in run.points] == [4]
        assert all(p["fid"] > 0 for p in run.points)
    assert runs[0].options["d_width"] == 0.5
    stem = "quality-data-hit-tiny-32-0.03min"
    record = json.loads((out / f"{stem}.json").read_text())
    assert [r["name"] for r in record["runs"]] == ["fast", "fast (G)", quality.BASELINE]
    assert (out / f"{stem}.png").stat().st_size > 0
    for name in ("fast", "fast-G", "baseline"):  # each run's last samples, 8 x 8 tiles of 32 px
        assert Image.open(out / f"{stem}-{name}.png").size == (8 * 34 - 2, 8 * 34 - 2)
    printed = capsys.readouterr().out
    assert "FID-4 after 0.03 min: fast" in printed and "(CPU time / threads, 1 thread)" in printed
    assert torch.get_num_threads() == threads  # restored for scoring and after
