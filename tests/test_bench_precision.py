"""bench/precision.py end to end on the tiny preset (no timing assertions)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import precision
from hitgan.training.config import build_config
from hitgan.training.loop import Trainer


@pytest.mark.slow
def test_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "precision.json"
    runs = precision.main(["--modes", "fp32,bf16", "--steps", "2", "--batch", "4",
                           "--check-every", "1", "--json", str(out), "--no-malloc-cache"])
    assert list(runs) == ["fp32", "bf16"]
    assert runs["bf16"].precision == "bf16" and not runs["bf16"].compile
    assert runs["bf16"].forced is None and runs["fp32"].forced is not None
    printed = capsys.readouterr().out
    assert "| bf16 | G/loss |" in printed and "| bf16 | D/r1 |" in printed
    assert "bf16 vs fp32 free-running: last-2-step mean gaps" in printed
    assert "|G/loss gap| > 0.1 first at step" in printed
    assert "| bf16 | G/loss | " in printed and "|  | D/grad_norm | " in printed  # forced table
    assert "bf16 vs fp32 teacher-forced (2 steps of the fp32 trajectory, every 1)" in printed
    assert "fp32 teacher-forced replay vs the logged fp32 step: max abs diff 0 " in printed
    saved = json.loads(out.read_text())
    assert saved["window"] == 2 and set(saved["modes"]) == {"fp32", "bf16"}
    for mode in saved["modes"].values():
        assert len(mode["step_seconds"]) == 2 and mode["steps_per_s"] > 0
        for key in ("G/loss", "D/loss_gan", "D/r1"):
            curve = mode["curves"][key]
            assert len(curve) == 2 and all(v is not None and math.isfinite(v) for v in curve)
    compared = saved["modes"]["bf16"]["losses_vs_fp32"]
    assert set(compared) == {"G/loss", "D/loss_gan", "D/r1"}
    assert all(math.isfinite(v) for c in compared.values() for v in c.values())
    assert math.isfinite(saved["modes"]["bf16"]["g_ema_out_max_abs_diff"])
    assert saved["modes"]["fp32"]["first_step_g_loss_gap_over"] is None
    forced = saved["teacher_forced"]
    assert forced["steps"] == [1, 2] and forced["replay_max_abs_diff"] == 0
    vs = forced["vs_fp32"]["bf16"]
    assert set(vs["stats"]) == {"G/loss", "D/loss_gan", "D/r1", "G/grad_norm", "D/grad_norm"}
    # bf16 rounding shows, but one step's losses and gradients stay close to fp32's
    assert 0 < vs["stats"]["G/loss"]["max_rel_diff"] < 0.05
    assert all(0.99 < c["min"] <= c["mean"] <= 1 for c in vs["grad_cosine"].values())


@pytest.mark.slow
def test_check_leaves_the_trajectory_alone() -> None:
    """The fp32 run with a check at every step is bit for bit the unchecked run, and the
    check's fp32 replay is exactly what train_step logged."""
    checked_args, plain_args = (precision.parse_args(["--steps", "3", "--batch", "4",
                                                      "--check-every", n]) for n in ("1", "0"))
    with tempfile.TemporaryDirectory() as tmp:
        checked = precision.train_mode("fp32", checked_args, tmp, ["bf16"])
        plain = precision.train_mode("fp32", plain_args, tmp, ["bf16"])
    assert plain.forced is None and checked.forced is not None
    assert checked.curves == plain.curves and torch.equal(checked.g_out, plain.g_out)
    forced = checked.forced
    assert forced.steps == [1, 2, 3] and forced.replay_max_abs_diff == 0
    for key, values in forced.values["fp32"].items():
        assert values == checked.curves[key]
    assert set(forced.cosine) == {"bf16"} and len(forced.cosine["bf16"]["D"]) == 3


def test_forced_step_restores_state(tmp_path: Path) -> None:
    # fp32 whatever the CPU (the auto recipe picks bf16 where it is native)
    cfg = build_config({"preset": "hit-tiny-32", "data": "mnist", "steps": 1, "batch": 4,
                        "out": str(tmp_path), "precision": "fp32"})
    trainer = Trainer(cfg, progress=False)
    micro = [next(iter(trainer.loader()))]
    modules = (trainer.G, trainer.D)
    buffers = [b.clone() for m in modules for b in m.buffers()]
    gen, rng, loss = trainer.gen.get_state(), torch.get_rng_state(), trainer.loss
    stats, g_grad, d_grad = precision.forced_step(trainer, micro, "bf16", trainer.G)
    assert trainer.cfg is cfg and trainer.loss is loss and loss.precision == "fp32"
    assert all(torch.equal(a, b) for a, b in zip(
        (b for m in modules for b in m.buffers()), buffers, strict=True))
    assert torch.equal(trainer.gen.get_state(), gen) and torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for m in modules for p in m.parameters())
    assert g_grad.numel() == sum(p.numel() for p in trainer.G.parameters())
    assert d_grad.numel() == sum(p.numel() for p in trainer.D.parameters())
    assert math.isclose(stats["G/grad_norm"], float(g_grad.norm()), rel_tol=1e-5)
    logged = trainer.train_step(micro)  # bf16 stats close to what the fp32 step logs
    assert abs(stats["G/loss"] - logged["G/loss"]) < 0.01


def _run(mode: str, g_loss: list[float], forced: precision.TeacherForced | None = None
         ) -> precision.ModeRun:
    curves = {"G/loss": g_loss, "D/loss_gan": [1.4, 1.3, 1.2], "D/r1": [0.1] * 3}
    return precision.ModeRun(mode, mode, False, curves, [0.1] * 3, 0, torch.zeros(1), forced)


def _forced() -> precision.TeacherForced:
    values = {"fp32": {"G/loss": [0.5, 1.0], "G/grad_norm": [2.0, 4.0]},
              "bf16": {"G/loss": [0.5, 1.1], "G/grad_norm": [2.2, 4.0]}}
    return precision.TeacherForced(10, [1, 11], values, {"bf16": {"G": [0.99, 1.0],
                                                                 "D": [0.98, 0.99]}}, 0.0)


def test_first_gap_step() -> None:
    ref = _run("fp32", [0.7, 0.6, 0.65])
    assert precision.first_gap_step(_run("bf16", [0.7, 0.65, 0.9]), ref, 0.1) == 3
    assert precision.first_gap_step(_run("bf16", [0.7, 0.65, 0.7]), ref, 0.1) is None
    assert precision.first_gap_step(_run("bf16", [math.nan, 0.6, 0.65]), ref, 0.1) == 1


def test_compare_forced() -> None:
    stats, cosines = precision.compare_forced(_forced(), "bf16")
    assert set(stats) == {"G/loss", "G/grad_norm"}
    assert stats["G/loss"].max_abs_diff == pytest.approx(0.1)
    assert stats["G/loss"].mean_abs_diff == pytest.approx(0.05)
    assert stats["G/loss"].max_rel_diff == pytest.approx(0.1)
    assert stats["G/grad_norm"].max_rel_diff == pytest.approx(0.1)
    assert stats["G/grad_norm"].fp32_mean_abs == 3.0
    assert cosines["G"].min == 0.99 and cosines["D"].mean == pytest.approx(0.985)
    assert np.isfinite([s.max_rel_diff for s in stats.values()]).all()


@pytest.mark.parametrize("with_forced", [False, True])
def test_plot(tmp_path: Path, with_forced: bool) -> None:
    pytest.importorskip("matplotlib")
    runs = {"fp32": _run("fp32", [0.7, 0.6, 0.65], _forced() if with_forced else None),
            "bf16": _run("bf16", [0.7, 0.6, 0.9])}
    path = tmp_path / "curves.png"
    precision.plot(runs, str(path), smooth=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["--modes", "bf16"], "include fp32"),
    (["--modes", "fp32,fp64"], "unknown ['fp64']"),
    (["--modes", "fp32,bf16,fp32"], "listed twice"),
    (["--steps", "0"], "--steps 0: must be >= 1"),
    (["--batch", "-1"], "--batch -1: must be >= 1"),
    (["--window", "0"], "--window 0"),
    (["--workers", "-1"], "--workers -1"),
    (["--check-every", "-1"], "--check-every -1: must be >= 0"),
    (["--gap", "0"], "--gap 0.0: must be > 0"),
    (["--preset", "hit-huge"], "--preset"),
    (["--plot", "curves.jpg"], "--plot curves.jpg: give a .png path"),
])
def test_bad_options(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit):
        precision.parse_args(argv)
    assert message in capsys.readouterr().err


def test_plot_needs_matplotlib(monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(precision.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit):
        precision.parse_args(["--plot", "curves.png"])
    assert "needs matplotlib" in capsys.readouterr().err
