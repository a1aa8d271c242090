"""bench/train_step.py runs end to end on the tiny preset (no timing assertions); the official
TF step runs where a TF install and the official checkout are present."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

from bench import train_step

# where a TF install and the official checkout are: HITGAN_TF_PYTHON, HITGAN_OFFICIAL_DIR
TF_PYTHON = Path(os.environ.get("HITGAN_TF_PYTHON", "tfenv/bin/python"))
OFFICIAL = Path(os.environ.get("HITGAN_OFFICIAL_DIR", "official"))


@pytest.mark.slow  # bf16 steps, emulated (slow) on CPUs without bf16 units
def test_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "train.json"
    rows = train_step.main(["--presets", "hit-tiny-32", "--batch", "2", "--repeats", "1",
                            "--rounds", "1", "--warmup", "1", "--matmul-size", "128",
                            "--modes", "fp32,bf16", "--json", str(out)])
    assert [(r.impl, r.variant) for r in rows] == [
        ("ours fp32", "R1"), ("ours bf16", "R1"), ("ours fp32", "R1+bCR"),
        ("ours bf16", "R1+bCR")]
    for r in rows:
        assert r.preset == "hit-tiny-32" and r.batch == 2 and r.samples == 1
        assert r.images_per_s > 0 and r.gflops > 0 and r.peak_fraction > 0
        assert math.isclose(r.images_per_s, 2 / r.seconds)
        assert set(r.first_losses) >= {"G/loss", "D/loss", "D/r1"}
    bcr_flops = {r.step_gflop for r in rows if r.variant == "R1+bCR"}
    r1_flops = {r.step_gflop for r in rows if r.variant == "R1"}
    assert len(bcr_flops) == len(r1_flops) == 1 and bcr_flops.pop() > r1_flops.pop()
    assert rows[0].loss_diff is None
    assert rows[1].loss_diff is not None and rows[1].loss_diff < 0.1  # bf16 vs fp32, same seed
    assert "D/bcr" in rows[2].first_losses
    printed = capsys.readouterr().out
    assert "| hit-tiny-32 | 2 | ours bf16 | R1+bCR |" in printed
    assert "ours bf16 / ours fp32" in printed
    saved = json.loads(out.read_text())
    assert len(saved["rows"]) == 4 and set(saved["matmul_gflops"]) == {"fp32", "bf16"}
    assert saved["notes"] and saved["ratios"] and "malloc_cache" in saved["machine"]


def test_step_flops_count_the_double_backward() -> None:
    """The counter sees R1's double backward: a step costs more than 3x D's forward alone."""
    import torch

    from hitgan.models.config import get_preset
    from hitgan.models.discriminator import StyleGANDiscriminator

    d = StyleGANDiscriminator(get_preset("hit-tiny-32").discriminator)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    with train_step.StepFlops() as forward:
        d(x)
    with train_step.StepFlops() as r1:
        (grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
        grad.square().sum().backward()
    assert forward.total > 0 and r1.total > 3 * forward.total


@pytest.mark.parametrize("argv, message", [
    (["--official", "/nowhere"], "go together"),
    (["--official", "/nowhere", "--tf-python", sys.executable], "no models/generators.py"),
    (["--presets", "hit-huge"], "--presets"),
    (["--batch", "0"], "--batch 0"),
    (["--repeats", "0"], "--repeats"),
    (["--warmup", "0"], "--warmup"),
    (["--modes", "fp32,fp8"], "--modes"),
    (["--modes", "fp32,fp32"], "--modes"),
    (["--bcr", "maybe"], "--bcr"),
    (["--device", "tpu"], "--device"),
])
def test_bad_options(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit):
        train_step.parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.skipif(not (TF_PYTHON.is_file() and (OFFICIAL / "models").is_dir()),
                    reason="needs the TF venv and the official checkout")
def test_official_step(tmp_path: Path) -> None:
    rows = train_step.main(["--presets", "hit-b-128", "--batch", "1", "--repeats", "1",
                            "--rounds", "1", "--warmup", "1", "--matmul-size", "128",
                            "--modes", "fp32", "--bcr", "off", "--official", str(OFFICIAL),
                            "--tf-python", str(TF_PYTHON)])
    assert [r.impl for r in rows] == ["ours fp32", "official tf"]
    official = rows[1]
    assert official.images_per_s > 0 and official.step_gflop == rows[0].step_gflop
    assert all(math.isfinite(v) for v in official.first_losses.values())


def test_auto_mode_times_whole_lazy_cycles(capsys: pytest.CaptureFixture[str]) -> None:
    """The docs' side-by-side command at toy size: the auto recipe's row counts its own FLOPs
    over a lazy-R1 cycle (a fraction of the official step's) and its ratio is printed."""
    rows = train_step.main(["--presets", "hit-tiny-32", "--batch", "2", "--repeats", "1",
                            "--rounds", "1", "--warmup", "1", "--matmul-size", "128",
                            "--modes", "fp32,auto", "--bcr", "off"])
    assert [r.impl for r in rows] == ["ours fp32", train_step.AUTO]
    official, auto = rows
    assert auto.step_gflop < official.step_gflop / 3 and auto.images_per_s > 0
    assert "R1 cost 10 every 16 steps" in auto.note
    assert "ours auto recipe / ours fp32" in capsys.readouterr().out
