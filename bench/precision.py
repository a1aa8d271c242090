"""Do the faster training modes track fp32? Loss curves, final generator outputs and speed.

Each mode trains the same preset on the same data from the same seed with the real Trainer
(``Trainer.train_step`` on its own loader, as ``Trainer.run`` does; no checkpoints, samples or
FID), recording every step's losses. Against the fp32 run it reports, per loss: the mean and max
absolute difference of the curves, the difference of their means over the last ``--window``
steps next to fp32's standard deviation over those steps (GAN losses are noisy and runs drift
apart step by step, so "tracks" means a gap within that noise, not bitwise equality), the max
absolute difference of the EMA generators' outputs on fixed latents (eval mode, an fp32 forward,
so it measures where training took the weights), and each mode's steps/s (median step time).

The GAN is chaotic: two free-running runs whose arithmetic differs in the last bit separate
within tens of steps, so the free-running curves cannot tell a mode's rounding from chaos. Two
things do:

* the chaos reference: the first step where the free-running |G/loss - fp32| exceeds ``--gap``,
  printed next to the compile mode's (fp32 arithmetic in another order, ~1e-7 relative per op,
  so its separation step is how fast chaos alone separates two runs);
* the teacher-forced check (``--check-every``, default 10; 0 turns it off): along the fp32 run's
  trajectory, before every ``--check-every``-th update, the same step's losses and G and D
  gradients are computed under each other mode on exactly the same weights, batch, latents and
  augmentations, updating nothing (the step's random draws are peeked, BatchNorm statistics,
  gradients and RNG states restored, so the fp32 trajectory is bit for bit the unchecked one).
  Reported per mode: max / mean absolute and max relative difference of each loss and gradient
  norm, and the cosine similarity of the flattened G and D gradients to fp32's. That is the
  mode's precision error alone, one step at a time.

Modes: fp32 (the reference), bf16 (autocast with fp32 master weights), compile (torch.compile of
G), bf16-compile. For example::

    python -m bench.precision --steps 300 --modes fp32,compile,bf16 \
        --json precision.json --plot precision.png
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench.common import LOCK_HINT, describe, fail, markdown_table, start_run
from hitgan.models.config import PRESETS
from hitgan.training.config import build_config
from hitgan.training.loop import Trainer, grad_norm

MODES: dict[str, tuple[str, bool]] = {  # name -> (TrainConfig precision, compile)
    "fp32": ("fp32", False),
    "bf16": ("bf16", False),
    "compile": ("fp32", True),
    "bf16-compile": ("bf16", True),
}
REFERENCE = "fp32"
CHAOS_REFERENCE = "compile"  # fp32 arithmetic in another order: separates by chaos alone
LOSSES = ("G/loss", "D/loss_gan", "D/r1", "D/bcr")  # compared where the run logs them
GRAD_NORMS = ("G/grad_norm", "D/grad_norm")
PLOT_FLOOR = 1e-12  # zero differences on the log-scale panels


@dataclass
class TeacherForced:
    """Every mode's losses and gradients at checked steps of the fp32 trajectory."""
    check_every: int
    steps: list[int]  # the checked steps, numbered as the curves are (1 = the first update)
    values: dict[str, dict[str, list[float]]]  # mode (fp32 too) -> stat -> value per check
    cosine: dict[str, dict[str, list[float]]]  # mode -> "G" / "D" -> gradient cosine to fp32
    replay_max_abs_diff: float  # fp32 recomputed vs logged by train_step: 0 if exact


@dataclass
class ModeRun:
    mode: str
    precision: str
    compile: bool
    curves: dict[str, list[float]]  # stat name -> value per step (losses and grad norms)
    step_seconds: list[float]  # wall time of each step (the first includes any compilation)
    skipped: int  # non-finite steps the trainer skipped
    g_out: torch.Tensor = field(repr=False)  # (N, 3, R, R) G_ema on the fixed latents
    forced: TeacherForced | None = None  # the reference run only, unless --check-every 0

    @property
    def steps_per_s(self) -> float:
        """1 / the median step time, the first step (warm-up, compilation) left out when there
        are others; the median shrugs off a few steps slowed by another process."""
        return 1 / statistics.median(self.step_seconds[1:] or self.step_seconds)


@dataclass
class LossComparison:
    mean_abs_diff: float
    max_abs_diff: float
    last_mean_diff: float  # mean over the last window of this mode minus fp32's
    fp32_last_std: float  # fp32's step-to-step std over that window: the scale of the above


@dataclass
class ForcedComparison:
    """One stat of one mode against fp32 over the teacher-forced checks."""
    max_abs_diff: float
    mean_abs_diff: float
    max_rel_diff: float  # max of |mode - fp32| / |fp32|
    fp32_mean_abs: float  # the scale: fp32's mean |value| over the checks


@dataclass
class CosineSummary:
    min: float
    mean: float


# ---- the teacher-forced step ---------------------------------------------------------------
def _flat_grad(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.grad.detach().double().flatten() if p.grad is not None
                      else torch.zeros(p.numel(), dtype=torch.float64) for p in params])


def forced_step(trainer: Trainer, micro: list[torch.Tensor], precision: str,
                G_forward: torch.nn.Module
                ) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """The losses, gradient norms and flattened (float64) G and D gradients that
    ``trainer.train_step(micro)`` would compute next, with ``precision`` autocast and
    ``G_forward`` running G (G itself or its torch.compile), on the trainer's current weights,
    batch, latents and augmentations: ``Trainer.accumulate_gradients`` with the trainer's loss
    in that precision.

    Updates nothing: the step's draws are peeked from ``trainer.gen`` (its state restored), and
    G's and D's buffers (BatchNorm statistics, which a train-mode forward moves), the gradients
    and the global torch RNG are put back. Single process, no fp16 grad scaler; the fp32 replay
    matching the logged step (``TeacherForced.replay_max_abs_diff``) checks that it is the
    step ``train_step`` computes.
    """
    if trainer.info.world != 1 or precision == "fp16":
        raise ValueError("forced_step: single process, fp32 / bf16 only")
    loss = dataclasses.replace(trainer.loss, G=G_forward, precision=precision)
    g_params, d_params = list(trainer.G.parameters()), list(trainer.D.parameters())
    modules = (trainer.G, trainer.D)
    buffers = [b.clone() for m in modules for b in m.buffers()]
    grads = [p.grad for p in g_params + d_params]
    gen_state, rng_state = trainer.gen.get_state(), torch.get_rng_state()
    training = [m.training for m in modules]
    try:
        for p in g_params + d_params:
            p.grad = None
        stats, _ = trainer.accumulate_gradients(micro, loss)
        stats["G/grad_norm"] = grad_norm(g_params)
        stats["D/grad_norm"] = grad_norm(d_params)
        return dict(stats), _flat_grad(g_params), _flat_grad(d_params)
    finally:
        for m, mode in zip(modules, training, strict=True):
            m.train(mode)
        with torch.no_grad():
            for b, old in zip((b for m in modules for b in m.buffers()), buffers, strict=True):
                b.copy_(old)
        for p, g in zip(g_params + d_params, grads, strict=True):
            p.grad = g
        trainer.gen.set_state(gen_state)
        torch.set_rng_state(rng_state)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


# ---- training ------------------------------------------------------------------------------
def train_mode(mode: str, args: argparse.Namespace, out_dir: str,
               check_modes: Sequence[str] = ()) -> ModeRun:
    """Train ``args.steps`` steps in ``mode``; the losses of every step and G_ema's outputs.
    With ``check_modes`` (and ``args.check_every`` > 0), the teacher-forced check of those modes
    against this run's own arithmetic along its trajectory."""
    precision, compile_ = MODES[mode]
    cfg = build_config({"preset": args.preset, "data": args.data, "steps": args.steps,
                        "batch": args.batch, "seed": args.seed, "precision": precision,
                        "compile": compile_, "bcr": args.bcr, "workers": args.workers,
                        "out": str(Path(out_dir) / mode)}, recipe="official")
    trainer = Trainer(cfg, progress=False)
    forced: TeacherForced | None = None
    runners: dict[str, tuple[str, torch.nn.Module]] = {}  # mode -> (precision, G_forward)
    if check_modes and args.check_every > 0:  # G compiled once, sharing G's parameters
        compiled = (torch.compile(trainer.G) if any(MODES[m][1] for m in check_modes)
                    else trainer.G)
        runners = {m: (MODES[m][0], compiled if MODES[m][1] else trainer.G)
                   for m in (mode, *check_modes)}  # this run's own arithmetic first
        forced = TeacherForced(args.check_every, [], {m: defaultdict(list) for m in runners},
                               {m: defaultdict(list) for m in check_modes}, 0.0)
    curves: dict[str, list[float]] = {}
    seconds: list[float] = []
    with tqdm(total=cfg.steps, desc=mode, unit="step", mininterval=2.0,
              dynamic_ncols=True) as bar:
        while trainer.step < cfg.steps:
            micro = trainer.next_micro_batches()
            replay: dict[str, float] | None = None
            if forced is not None and trainer.step % args.check_every == 0:
                forced.steps.append(trainer.step + 1)
                ref_grads: tuple[torch.Tensor, torch.Tensor] | None = None
                for m, (m_precision, G_forward) in runners.items():
                    checked, g_grad, d_grad = forced_step(trainer, micro, m_precision, G_forward)
                    for k, v in checked.items():
                        forced.values[m][k].append(v)
                    if ref_grads is None:
                        replay, ref_grads = checked, (g_grad, d_grad)
                    else:
                        forced.cosine[m]["G"].append(_cosine(g_grad, ref_grads[0]))
                        forced.cosine[m]["D"].append(_cosine(d_grad, ref_grads[1]))
            t = time.perf_counter()
            stats = trainer.train_step(micro)
            seconds.append(time.perf_counter() - t)
            if forced is not None and replay is not None:
                forced.replay_max_abs_diff = max(forced.replay_max_abs_diff, *(
                    abs(v - stats[k]) for k, v in replay.items()))
            for k, v in stats.items():
                if k != "skipped":
                    curves.setdefault(k, []).append(v)
            bar.update(1)
            bar.set_postfix_str(f"G {stats['G/loss']:.3f} D {stats['D/loss_gan']:.3f}")
    assert all(len(c) == cfg.steps for c in curves.values()), "a stat missing on some steps"
    with torch.no_grad():
        G = trainer.ema.model.eval()
        z = trainer.sample_z.to(trainer.info.device)  # the same latents in every mode (seed + 1)
        g_out = torch.cat([G(chunk) for chunk in z.split(16)]).float().cpu()  # (64, 3, R, R)
    if forced is not None:  # plain dicts: a missing stat is an error, not an empty list
        forced.values = {m: dict(v) for m, v in forced.values.items()}
        forced.cosine = {m: dict(v) for m, v in forced.cosine.items()}
    return ModeRun(mode, precision, compile_, curves, seconds, trainer.skipped, g_out, forced)


# ---- comparisons ---------------------------------------------------------------------------
def compare_losses(run: ModeRun, ref: ModeRun, window: int) -> dict[str, LossComparison]:
    out = {}
    for key in LOSSES:
        if key not in ref.curves or key not in run.curves:
            continue
        a, b = np.asarray(run.curves[key]), np.asarray(ref.curves[key])
        diff = np.abs(a - b)
        tail = slice(-min(window, len(b)), None)
        out[key] = LossComparison(float(diff.mean()), float(diff.max()),
                                  float(a[tail].mean() - b[tail].mean()), float(b[tail].std()))
    return out


def first_gap_step(run: ModeRun, ref: ModeRun, gap: float, key: str = "G/loss") -> int | None:
    """The first step (1-based) where the free-running |run - ref| of ``key`` exceeds ``gap``;
    None if it never does."""
    diff = np.abs(np.asarray(run.curves[key]) - np.asarray(ref.curves[key]))
    over = np.flatnonzero(~(diff <= gap))  # NaN counts as over
    return int(over[0]) + 1 if over.size else None


def compare_forced(forced: TeacherForced, mode: str
                   ) -> tuple[dict[str, ForcedComparison], dict[str, CosineSummary]]:
    """``mode`` against the reference over the checks: per loss and gradient norm, and the
    gradient cosines."""
    ref_values, values = forced.values[REFERENCE], forced.values[mode]
    stats = {}
    for key in (*LOSSES, *GRAD_NORMS):
        if key not in ref_values or key not in values:
            continue
        a, b = np.asarray(values[key]), np.asarray(ref_values[key])
        diff = np.abs(a - b)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(diff == 0, 0.0, diff / np.abs(b))
        stats[key] = ForcedComparison(float(diff.max()), float(diff.mean()), float(rel.max()),
                                      float(np.abs(b).mean()))
    cosines = {k: CosineSummary(float(np.min(v)), float(np.mean(v)))
               for k, v in forced.cosine[mode].items()}
    return stats, cosines


# ---- output --------------------------------------------------------------------------------
def _step_or_never(step: int | None) -> str:
    return "never" if step is None else str(step)


def verdict(run: ModeRun, ref: ModeRun, losses: dict[str, LossComparison], window: int,
            gap: float, chaos: ModeRun | None = None) -> str:
    """One line of numbers: the last-window gaps in units of fp32's noise, when the run
    separated from fp32 (next to the chaos reference's), output and speed."""
    gaps = {k: abs(c.last_mean_diff) / c.fp32_last_std if c.fp32_last_std > 0
            else (0.0 if c.last_mean_diff == 0 else math.inf) for k, c in losses.items()}
    worst = max(gaps, key=lambda k: gaps[k])
    within = all(g <= 1 for g in gaps.values())
    parts = ", ".join(f"{k} {c.last_mean_diff:+.3g} ({gaps[k]:.2f} std)"
                      for k, c in losses.items())
    g_diff = (run.g_out - ref.g_out).abs().max().item()
    n = min(window, len(ref.step_seconds))
    first = _step_or_never(first_gap_step(run, ref, gap))
    separated = f"|G/loss gap| > {gap:g} first at step {first}"
    if chaos is not None and chaos is not run:
        separated += (f" ({chaos.mode}, the chaos reference: "
                      f"{_step_or_never(first_gap_step(chaos, ref, gap))})")
    return (f"{run.mode} vs {ref.mode} free-running: last-{n}-step mean gaps {parts}: "
            + ("all within 1 fp32 step-to-step std" if within else
               f"{worst} is {gaps[worst]:.2f} fp32 stds away")
            + f"; {separated}; G_ema output max abs diff {g_diff:.3e} (fp32 max |out| "
            f"{ref.g_out.abs().max().item():.3f}); {run.steps_per_s:.3f} steps/s = "
            f"{run.steps_per_s / ref.steps_per_s:.2f}x fp32"
            + (f"; {run.skipped} non-finite steps skipped" if run.skipped else ""))


def forced_verdict(forced: TeacherForced, mode: str) -> str:
    """One line: the mode's worst per-step relative errors and gradient cosines along the
    fp32 trajectory."""
    stats, cosines = compare_forced(forced, mode)
    rel = ", ".join(f"{k} {c.max_rel_diff:.2e}" for k, c in stats.items())
    cos = ", ".join(f"{k} min {c.min:.6f} mean {c.mean:.6f}" for k, c in cosines.items())
    return (f"{mode} vs {REFERENCE} teacher-forced ({len(forced.steps)} steps of the fp32 "
            f"trajectory, every {forced.check_every}): max rel diff {rel}; grad cosine {cos}")


def format_table(runs: dict[str, ModeRun], comparisons: dict[str, dict[str, LossComparison]],
                 window: int, gap: float) -> str:
    ref = runs[REFERENCE]
    n = min(window, len(ref.step_seconds))
    header = ["mode", "loss", "mean abs diff", "max abs diff", f"last-{n} mean diff",
              f"fp32 last-{n} std", f"first step G gap > {gap:g}", "G_ema out max abs diff",
              "steps/s", "skipped"]
    rows: list[list[object]] = []
    for mode, run in runs.items():
        g_diff = (run.g_out - ref.g_out).abs().max().item()
        if mode == REFERENCE:
            rows.append([mode, "-", "-", "-", "-", "-", "-", "-", f"{run.steps_per_s:.3f}",
                         run.skipped])
            continue
        first = _step_or_never(first_gap_step(run, ref, gap))
        for i, (key, c) in enumerate(comparisons[mode].items()):
            head = i == 0
            rows.append([mode, key, f"{c.mean_abs_diff:.3g}", f"{c.max_abs_diff:.3g}",
                         f"{c.last_mean_diff:+.3g}", f"{c.fp32_last_std:.3g}",
                         first if head else "", f"{g_diff:.3e}" if head else "",
                         f"{run.steps_per_s:.3f}" if head else "",
                         run.skipped if head else ""])
    return markdown_table(header, rows)


def format_forced_table(forced: TeacherForced) -> str:
    header = ["mode", "stat", "max abs diff", "mean abs diff", "max rel diff",
              "fp32 mean |value|", "grad cos min", "grad cos mean"]
    rows: list[list[object]] = []
    for mode in forced.cosine:
        stats, cosines = compare_forced(forced, mode)
        for i, (key, c) in enumerate(stats.items()):
            cos = cosines.get(key.split("/")[0]) if key in GRAD_NORMS else None
            rows.append([mode if i == 0 else "", key, f"{c.max_abs_diff:.3e}",
                         f"{c.mean_abs_diff:.3e}", f"{c.max_rel_diff:.3e}",
                         f"{c.fp32_mean_abs:.4g}", f"{cos.min:.8f}" if cos else "",
                         f"{cos.mean:.8f}" if cos else ""])
    return markdown_table(header, rows)


def plot(runs: dict[str, ModeRun], path: str, smooth: int, gap: float = 0.1) -> None:
    """One panel per loss: each mode's raw curve (faint) and its moving average; then the
    free-running |G/loss - fp32| with the ``gap`` line, and with the teacher-forced check the
    per-step relative loss differences and 1 - gradient cosine, log scale."""
    try:
        import matplotlib
    except ImportError:
        fail(f"--plot {path}: needs matplotlib (pip install matplotlib, or the dev extra)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = runs[REFERENCE]
    forced = ref.forced
    keys = [k for k in LOSSES if k in ref.curves]
    n_panels = len(keys) + 1 + (2 if forced is not None else 0)
    fig, axes = plt.subplots(n_panels, 1, figsize=(9, 2.8 * n_panels), sharex=True,
                             squeeze=False)
    colors = {mode: f"C{i}" for i, mode in enumerate(runs)}
    for ax, key in zip(axes[:, 0], keys, strict=False):
        for mode, run in runs.items():
            y = np.asarray(run.curves[key])
            steps = np.arange(1, len(y) + 1)
            ax.plot(steps, y, color=colors[mode], alpha=0.25, linewidth=0.7)
            k = min(smooth, len(y))
            ax.plot(steps[k - 1:], np.convolve(y, np.ones(k) / k, mode="valid"),
                    color=colors[mode], linewidth=1.5, label=f"{mode} ({k}-step mean)")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    ax = axes[len(keys), 0]
    for mode, run in runs.items():
        if mode != REFERENCE:
            y = np.abs(np.asarray(run.curves["G/loss"]) - np.asarray(ref.curves["G/loss"]))
            ax.plot(np.arange(1, len(y) + 1), np.maximum(y, PLOT_FLOOR), color=colors[mode],
                    linewidth=0.9, label=f"{mode} (first > {gap:g}: step "
                    f"{_step_or_never(first_gap_step(run, ref, gap))})")
    ax.axhline(gap, color="k", linestyle=":", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("free-running\n|G/loss - fp32|")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if forced is not None:
        styles = dict(zip(LOSSES, ("-", "--", ":", "-."), strict=True))
        ax_loss, ax_cos = axes[len(keys) + 1, 0], axes[len(keys) + 2, 0]
        steps = np.asarray(forced.steps)
        ref_values = forced.values[REFERENCE]
        for mode in forced.cosine:
            for key in LOSSES:
                if key in ref_values and key in forced.values[mode]:
                    b = np.asarray(ref_values[key])
                    rel = np.abs(np.asarray(forced.values[mode][key]) - b) / np.abs(b)
                    ax_loss.plot(steps, np.maximum(rel, PLOT_FLOOR), color=colors[mode],
                                 linestyle=styles[key], marker=".", linewidth=0.9,
                                 label=f"{mode} {key}")
            for net, style in (("G", "-"), ("D", "--")):
                y = 1 - np.asarray(forced.cosine[mode][net])
                ax_cos.plot(steps, np.maximum(y, PLOT_FLOOR), color=colors[mode],
                            linestyle=style, marker=".", linewidth=0.9, label=f"{mode} {net}")
        ax_loss.set_ylabel("teacher-forced\n|loss - fp32| / |fp32|")
        ax_cos.set_ylabel("teacher-forced\n1 - grad cosine")
        for a in (ax_loss, ax_cos):
            a.set_yscale("log")
            a.grid(alpha=0.3)
            a.legend(loc="upper right", fontsize=7, ncol=2)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle("training modes vs fp32 (same seed, data and initialisation; "
                 f"values below {PLOT_FLOOR:g} drawn at it)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.99))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _finite_or_none(values: list[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]


def write_json(path: str, info: dict[str, object], argv: list[str],
               runs: dict[str, ModeRun], comparisons: dict[str, dict[str, LossComparison]],
               args: argparse.Namespace) -> None:
    ref = runs[REFERENCE]
    modes = {}
    for mode, run in runs.items():
        modes[mode] = {
            "precision": run.precision, "compile": run.compile, "skipped": run.skipped,
            "steps_per_s": run.steps_per_s, "step_seconds": run.step_seconds,
            "g_ema_out_max_abs": run.g_out.abs().max().item(),
            "g_ema_out_max_abs_diff": (run.g_out - ref.g_out).abs().max().item(),
            "losses_vs_fp32": {k: asdict(c) for k, c in comparisons.get(mode, {}).items()},
            "first_step_g_loss_gap_over": (None if mode == REFERENCE
                                           else first_gap_step(run, ref, args.gap)),
            "curves": {k: _finite_or_none(v) for k, v in run.curves.items()}}
    record: dict[str, object] = {
        "machine": info, "argv": argv,
        "options": {k: v for k, v in vars(args).items() if k not in ("json", "plot")},
        "window": min(args.window, args.steps), "modes": modes}
    if ref.forced is not None:
        forced = ref.forced
        vs_fp32 = {}
        for mode in forced.cosine:
            stats, cosines = compare_forced(forced, mode)
            vs_fp32[mode] = {"stats": {k: asdict(c) for k, c in stats.items()},
                             "grad_cosine": {k: asdict(c) for k, c in cosines.items()}}
        record["teacher_forced"] = {
            "check_every": forced.check_every, "steps": forced.steps,
            "replay_max_abs_diff": forced.replay_max_abs_diff, "vs_fp32": vs_fp32,
            "values": {m: {k: _finite_or_none(v) for k, v in s.items()}
                       for m, s in forced.values.items()},
            "grad_cosine": forced.cosine}
    Path(path).write_text(json.dumps(record, indent=1))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.precision",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default="fp32,bf16",
                   help=f"comma-separated, from {list(MODES)}; must include fp32, the reference")
    p.add_argument("--preset", default="hit-tiny-32", choices=sorted(PRESETS))
    p.add_argument("--data", default="mnist", help="training data (default: built-in mnist)")
    p.add_argument("--steps", type=int, default=300, help="training steps per mode")
    p.add_argument("--batch", type=int, default=32, help="global batch")
    p.add_argument("--seed", type=int, default=0, help="the seed every mode shares")
    p.add_argument("--bcr", action="store_true", help="train with bCR (adds D/bcr)")
    p.add_argument("--workers", type=int, default=0, help="data loader workers")
    p.add_argument("--window", type=int, default=50,
                   help="final steps whose mean losses are compared")
    p.add_argument("--gap", type=float, default=0.1,
                   help="free-running |G/loss - fp32| counted as separated (default 0.1)")
    p.add_argument("--check-every", type=int, default=10,
                   help="teacher-forced check every N steps of the fp32 run (0: off)")
    p.add_argument("--smooth", type=int, default=20, help="moving-average steps in --plot")
    p.add_argument("--json", help="write the full curves, comparisons and machine info here")
    p.add_argument("--plot", help="write a PNG of the loss curves here (needs matplotlib)")
    p.add_argument("--no-malloc-cache", dest="malloc_cache", action="store_false",
                   help="leave glibc malloc at its defaults (the hitgan command changes them)")
    args = p.parse_args(argv)
    for opt in ("steps", "batch", "window", "smooth"):
        if getattr(args, opt) < 1:
            p.error(f"--{opt} {getattr(args, opt)}: must be >= 1")
    if args.workers < 0:
        p.error(f"--workers {args.workers}: must be >= 0")
    if args.check_every < 0:
        p.error(f"--check-every {args.check_every}: must be >= 0 (0: no check)")
    if not args.gap > 0:
        p.error(f"--gap {args.gap}: must be > 0")
    modes = [m.strip() for m in args.modes.split(",")]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        p.error(f"--modes: unknown {unknown}; choose from {list(MODES)}")
    if len(set(modes)) != len(modes):
        p.error(f"--modes {args.modes}: a mode is listed twice")
    if REFERENCE not in modes:
        p.error(f"--modes {args.modes}: include {REFERENCE}, the reference the others are "
                "compared with")
    args.modes = modes
    if args.plot and not args.plot.lower().endswith(".png"):
        p.error(f"--plot {args.plot}: give a .png path")
    if args.plot and importlib.util.find_spec("matplotlib") is None:  # fail before training
        p.error(f"--plot {args.plot}: needs matplotlib (pip install matplotlib, or the dev "
                "extra)")
    return args


def main(argv: list[str] | None = None) -> dict[str, ModeRun]:
    """Train every mode, print the tables and verdicts; returns the runs by mode."""
    args = parse_args(argv)
    info = start_run(malloc_cache=args.malloc_cache)
    print(describe(info))
    print(f"{args.preset} on {args.data}: {args.steps} steps at batch {args.batch}, seed "
          f"{args.seed}{', bCR' if args.bcr else ''}; {LOCK_HINT}", file=sys.stderr)
    others = [m for m in args.modes if m != REFERENCE]
    runs: dict[str, ModeRun] = {}
    with tempfile.TemporaryDirectory(prefix="hitgan-precision-") as tmp:
        for mode in args.modes:
            runs[mode] = train_mode(mode, args, tmp, others if mode == REFERENCE else ())
    runs = {REFERENCE: runs[REFERENCE], **runs}  # the reference first in the table
    ref = runs[REFERENCE]
    chaos = runs.get(CHAOS_REFERENCE)
    comparisons = {m: compare_losses(r, ref, args.window) for m, r in runs.items()
                   if m != REFERENCE}
    print(f"\n{args.preset}, {args.steps} steps at batch {args.batch} on {args.data}, "
          f"seed {args.seed}; each mode vs fp32\n\nfree-running (each mode trains on its own; "
          "the GAN is chaotic, so compare the separation step with "
          f"{CHAOS_REFERENCE}'s)\n")
    print(format_table(runs, comparisons, args.window, args.gap))
    forced = ref.forced
    if forced is not None:
        print(f"\nteacher-forced (every {forced.check_every} steps of the fp32 trajectory, "
              f"{len(forced.steps)} steps: the same step's losses and gradients in each mode on "
              "fp32's weights and inputs)\n")
        print(format_forced_table(forced))
    print()
    for mode, comparison in comparisons.items():
        print(verdict(runs[mode], ref, comparison, args.window, args.gap, chaos))
    if forced is not None:
        for mode in forced.cosine:
            print(forced_verdict(forced, mode))
        print(f"fp32 teacher-forced replay vs the logged fp32 step: max abs diff "
              f"{forced.replay_max_abs_diff:.3g} (0: the check recomputes train_step exactly)")
    if args.json:
        write_json(args.json, info, sys.argv[1:] if argv is None else list(argv), runs,
                   comparisons, args)
    if args.plot:
        plot(runs, args.plot, args.smooth, args.gap)
    return runs


if __name__ == "__main__":
    main()
