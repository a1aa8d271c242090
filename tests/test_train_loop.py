"""The trainer end to end on the tiny preset: bitwise resume, NaN guard, crash-safe checkpoints,
signals, and 2-process gloo runs equal to 1-process runs."""

import dataclasses
import json
import math
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hitgan.distributed import DistInfo
from hitgan.training import checkpoint, phases
from hitgan.training.config import PENALTIES, TrainConfig
from hitgan.training.loop import Trainer, TrainingDiverged


def _cfg(tmp_path, **changes) -> TrainConfig:
    base = {"out": str(tmp_path / "run"), "steps": 4, "batch": 4, "workers": 0,
            "log_every": 1, "sample_every": 1000, "checkpoint_every": 1000, "ema_start": 2,
            "bcr": True, "seed": 1}
    return TrainConfig(**{**base, **changes})


@pytest.fixture
def deterministic():
    yield
    torch.use_deterministic_algorithms(False)


def _state(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {}
    for name, module in (("G", trainer.G), ("D", trainer.D), ("ema", trainer.ema.model)):
        out.update({f"{name}.{k}": v.clone() for k, v in module.state_dict().items()})
    for name, opt in (("optG", trainer.opt_g), ("optD", trainer.opt_d)):
        for i, s in opt.state_dict()["state"].items():
            out.update({f"{name}.{i}.{k}": v.clone() for k, v in s.items()})
    return out


def test_resume_is_bitwise_identical(tmp_path, deterministic):
    straight = Trainer(_cfg(tmp_path / "a", steps=6, deterministic=True), progress=False)
    straight.run()
    first = Trainer(_cfg(tmp_path / "b", steps=3, deterministic=True), progress=False)
    first.run()
    resumed = Trainer(_cfg(tmp_path / "b", steps=6, deterministic=True, resume="auto"),
                      progress=False)
    assert resumed.step == 3 and resumed.resumed_from is not None
    resumed.run()
    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    assert straight.gen.get_state().equal(resumed.gen.get_state())


def test_train_step_draws_from_its_own_loader(tmp_path):
    """train_step() takes the next micro-batches of the trainer's loader: the same steps as the
    loader's micro-batches given by hand."""
    own = Trainer(_cfg(tmp_path / "a", batch_per_device=2), progress=False)
    fed = Trainer(_cfg(tmp_path / "b", batch_per_device=2), progress=False)
    batches = iter(fed.loader())
    for _ in range(2):
        assert own.train_step() == fed.train_step([next(batches) for _ in range(fed.accum)])
    a, b = _state(own), _state(fed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_every_penalty_has_a_dreg_phase():
    assert set(phases.DREG) == set(PENALTIES)
    lazy = TrainConfig(penalty="r1+r2", penalty_every=4)
    assert [phases.dreg_at(lazy, s) for s in (0, 1, 4)] == [
        phases.Dreg(r1=True, r2=True), phases.Dreg(), phases.Dreg(r1=True, r2=True)]


def test_non_finite_steps_are_skipped_then_the_run_stops(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, steps=20, checkpoint_every=2, nan_patience=3)
    trainer = Trainer(cfg, progress=False)
    real_g_loss = phases.g_loss

    def poisoned(logits, kind, *real):
        loss = real_g_loss(logits, kind, *real)
        return loss * float("nan") if trainer.step >= 2 else loss

    monkeypatch.setattr(phases, "g_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="3 non-finite steps in a row"):
        trainer.run()
    path, _ = checkpoint.latest_valid(cfg.out)
    assert path.name == "step-00000002"  # no checkpoint written during the streak
    ckpt = Trainer(_cfg(tmp_path, steps=20, resume=str(path)), progress=False)
    assert all(torch.equal(v, ckpt.G.state_dict()[k]) for k, v in trainer.G.state_dict().items())
    with open(f"{cfg.out}/log.jsonl") as f:
        lines = [json.loads(x) for x in f]
    assert [x["skipped_total"] for x in lines][-3:] == [1, 2, 3]


def test_resume_auto_skips_a_damaged_checkpoint(tmp_path, caplog):
    cfg = _cfg(tmp_path, steps=4, checkpoint_every=2, keep_checkpoints=5)
    Trainer(cfg, progress=False).run()
    newest = checkpoint.checkpoint_dir(cfg.out) / "step-00000004"
    data = bytearray((newest / "G.safetensors").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (newest / "G.safetensors").write_bytes(bytes(data))
    resumed = Trainer(_cfg(tmp_path, steps=6, resume="auto"), progress=False)
    assert resumed.step == 2
    assert "G.safetensors: content does not match" in caplog.text
    with pytest.raises(checkpoint.CheckpointError, match="does not match"):
        Trainer(_cfg(tmp_path, resume=str(newest)), progress=False)


def test_resume_with_another_generator_names_the_flag(tmp_path):
    """A run saved with pixel shuffle, resumed where the recipe now upsamples bilinearly: the
    error names what differs and the flag that restores it; nothing is overwritten."""
    cfg = _cfg(tmp_path, steps=2, checkpoint_every=2, bcr=False)
    Trainer(cfg, progress=False).run()
    saved = sorted(checkpoint.checkpoint_dir(cfg.out).iterdir())
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"upsample='pixel_shuffle' \(now 'bilinear'\); resume with "
                             "--upsample pixel_shuffle"):
        Trainer(_cfg(tmp_path, steps=4, upsample="bilinear", resume="auto"), progress=False)
    assert sorted(checkpoint.checkpoint_dir(cfg.out).iterdir()) == saved


KILL_SCRIPT = """
import sys
from hitgan.training.config import PENALTIES, TrainConfig
from hitgan.training.loop import Trainer
Trainer(TrainConfig(out=sys.argv[1], steps=10_000, batch=2, workers=0, checkpoint_every=1,
                    keep_checkpoints=2, log_every=1000, sample_every=100_000,
                    resume="auto"), progress=False).run()
"""


def _wait_for_checkpoint(run, proc, after: int) -> int:
    """The step of the newest valid checkpoint once it is past ``after`` (polls; no deadline
    tied to the machine's speed beyond a generous bound)."""
    deadline = time.monotonic() + 300
    while True:
        found = checkpoint.latest_valid(run)
        if found is not None and int(found[0].name.split("-")[1]) > after:
            return int(found[0].name.split("-")[1])
        assert proc.poll() is None, "the run ended before checkpointing"
        assert time.monotonic() < deadline, "no new checkpoint within 300 s"
        time.sleep(0.05)


@pytest.mark.slow
def test_kill_9_while_checkpointing_never_leaves_a_bad_checkpoint(tmp_path):
    """Checkpoints are written every step, so a kill at a random moment after one has
    completed often lands mid-write; the newest valid checkpoint must always load."""
    run, rng, last = tmp_path / "run", random.Random(0), 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(run)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            last = _wait_for_checkpoint(run, proc, after=last)
            time.sleep(rng.uniform(0, 0.5))  # a random point of the following steps
        finally:
            proc.kill()
            proc.wait()
        path, _ = checkpoint.latest_valid(run)
        trainer = Trainer(TrainConfig(out=str(run), steps=10_000, batch=2, workers=0,
                                      resume="auto"), progress=False)
        assert trainer.resumed_from == path and trainer.step >= last
        last = trainer.step


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hitgan", "train", "--out", str(run), "--steps", "100000",
         "--batch", "2", "--workers", "0", "--checkpoint-every", "100000", "--log-every", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = run / "log.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped by signal, checkpoint saved" in out
    path, _ = checkpoint.latest_valid(run)
    assert int(path.name.split("-")[1]) >= 2


def _ddp_worker(rank: int, world: int, init: str, out: str, cfg_dict: dict) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        _one_step(TrainConfig(**cfg_dict), DistInfo(rank=rank, world=world), out)
    finally:
        dist.destroy_process_group()


def _one_step(cfg: TrainConfig, info: DistInfo, out: str) -> None:
    trainer = Trainer(cfg, info, progress=False)
    grads = {}

    def capture(*args):
        grads.update({f"G.{i}": p.grad.clone() for i, p in enumerate(trainer.G.parameters())})
        grads.update({f"D.{i}": p.grad.clone() for i, p in enumerate(trainer.D.parameters())})

    trainer.opt_g.register_step_pre_hook(capture)
    stats = trainer.train_step()
    if info.is_main:
        torch.save({"grads": grads, "G": trainer.G.state_dict(), "D": trainer.D.state_dict(),
                    "stats": dict(stats)}, out)


@pytest.mark.parametrize("cond", [False, True], ids=["unconditional", "cond"])
def test_two_gloo_processes_match_one_process(tmp_path, cond):
    """Conditional: labels travel with their images through the StepSampler to each process
    (a label out of step with its image would change the gradients)."""
    cfg = _cfg(tmp_path, batch=8, norm="syncbatch", cond=cond)
    cfg_dict = {**cfg.to_dict(), "betas": tuple(cfg.betas)}
    single = tmp_path / "single.pt"
    _one_step(cfg, DistInfo(), str(single))
    double = tmp_path / "double.pt"
    mp.start_processes(_ddp_worker, args=(2, f"file://{tmp_path / 'pg'}", str(double),
                                          cfg_dict), nprocs=2, start_method="spawn")
    a, b = torch.load(single), torch.load(double)
    for k in ("G/loss", "D/loss", "D/r1", "D/bcr"):
        assert b["stats"][k] == pytest.approx(a["stats"][k], rel=1e-4, abs=1e-7), k
    # Summation order (and oneDNN conv kernels, chosen per batch size) differ. Compare each
    # tensor by the norm of the difference: relative to its own norm, or, for gradients that
    # are exactly zero in exact arithmetic (key biases; biases that only feed BatchNorm) and
    # hold float noise in both runs, to the scale of its model's gradients. Measured on an AMX
    # machine: at most 0.6% relative (a few LeakyReLU kinks of D flip with the batch split).
    scale = {m: max(g.abs().max().item() for k, g in a["grads"].items() if k.startswith(m))
             for m in ("G", "D")}
    for k, g in a["grads"].items():
        err = (b["grads"][k] - g).norm().item()
        assert err <= 2e-2 * g.norm().item() or err <= 1e-4 * scale[k[0]] * g.numel() ** 0.5, (
            k, err, g.norm().item())
    # Adam's first step is lr * g / (|g| + eps), eps = 1e-6 at step 1 (Keras's epsilon; see
    # training/optim.py), so where |g| is near eps the update follows the gradient's own noise.
    # Compare updates where the gradient is clearly non-zero (key biases, for one, get an
    # exactly-zero gradient in exact arithmetic) and the two runs' gradients agree to 1% (the
    # few that differ more were bounded by the norm check above).
    for name, module in (("G", a["G"]), ("D", a["D"])):
        params = [k for k, v in module.items() if v.is_floating_point()
                  and not k.endswith(("running_mean", "running_var"))]
        for i, k in enumerate(params):
            g = a["grads"][f"{name}.{i}"]
            g2 = b["grads"][f"{name}.{i}"]
            mask = (g.abs() > 1e-5) & ((g2 - g).abs() <= 1e-2 * g.abs())
            torch.testing.assert_close(b[name][k][mask], module[k][mask], rtol=0, atol=1e-6,
                                       msg=f"{name}.{k}")
        for k in module:
            if k.endswith(("running_mean", "running_var")):  # synchronized BatchNorm
                torch.testing.assert_close(b[name][k], module[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cond", [False, True], ids=["unconditional", "cond"])
def test_gradient_accumulation_matches_the_full_batch(tmp_path, cond):
    """batch 8 as 2 micro-batches of 4 == one batch of 8 (LayerNorm: no batch statistics);
    conditional: each micro-batch carries its own images' labels and its rows' fake labels."""
    results = []
    for micro in (8, 4):
        out = tmp_path / f"micro{micro}.pt"
        _one_step(_cfg(tmp_path / str(micro), batch=8, batch_per_device=micro, norm="layer",
                       cond=cond), DistInfo(), str(out))
        results.append(torch.load(out))
    full, accum = results
    for k in ("G/loss", "D/loss", "D/r1", "D/bcr"):
        assert accum["stats"][k] == pytest.approx(full["stats"][k], rel=1e-5), k
    for k, g in full["grads"].items():
        torch.testing.assert_close(accum["grads"][k], g, rtol=1e-4, atol=1e-7, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps(tmp_path, precision):
    trainer = Trainer(_cfg(tmp_path, steps=2, precision=precision), progress=False)
    result = trainer.run()
    assert result["step"] == 2 and trainer.skipped == 0
    assert all(torch.isfinite(p).all() for p in trainer.G.parameters())


@pytest.mark.slow
def test_periodic_fid_keeps_the_best_checkpoint(tmp_path):
    from PIL import Image

    data = tmp_path / "digits"
    data.mkdir()
    for i in range(16):
        arr = (torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(i)) * 255)
        Image.fromarray(arr.to(torch.uint8).numpy()).save(data / f"{i}.png")
    cfg = _cfg(tmp_path, data=str(data), steps=2, eval_every=1, eval_samples=8,
               keep_checkpoints=1, checkpoint_every=1000)
    trainer = Trainer(cfg, progress=False)
    trainer.run()
    with open(f"{cfg.out}/metrics.jsonl") as f:
        records = [json.loads(x) for x in f]
    assert [r["step"] for r in records] == [1, 2]
    fids = [next(v for k, v in r["results"].items() if k.startswith("fid")) for r in records]
    assert trainer.best_step == 1 + fids.index(min(fids)) and trainer.best_fid == min(fids)
    kept = {p.name for p in checkpoint.checkpoint_dir(cfg.out).iterdir()}
    assert f"step-{trainer.best_step:08d}" in kept and "step-00000002" in kept


def test_generate_from_a_run_directory_and_a_checkpoint(tmp_path, capsys):
    from hitgan.cli import main

    cfg = _cfg(tmp_path, steps=2, checkpoint_every=1, keep_checkpoints=2)
    Trainer(cfg, progress=False).run()
    assert main(["generate", "--model", cfg.out, "--seeds", "0-1", "--out",
                 str(tmp_path / "a")]) == 0
    step1 = checkpoint.checkpoint_dir(cfg.out) / "step-00000001"
    assert main(["generate", "--model", str(step1), "--seeds", "0-1", "--bn-recalibrate", "0",
                 "--out", str(tmp_path / "b")]) == 0
    assert main(["generate", "--model", str(tmp_path), "--out", str(tmp_path / "c")]) == 1
    assert "neither a checkpoint nor a run directory" in capsys.readouterr().err


def test_progress_bar_counts_the_time_budget(tmp_path):
    timed = Trainer(_cfg(tmp_path, steps=1_000_000, max_minutes=0.5))
    with timed._progress_bar() as bar:
        assert (bar.total, bar.unit) == (30, "s")  # not 1,000,000 steps with an ETA of days
    with Trainer(_cfg(tmp_path, steps=7))._progress_bar() as bar:
        assert (bar.total, bar.unit) == (7, "step")


def test_small_budget_options_train(tmp_path):
    """The options of the auto recipe and R3GAN's objective run end to end: a half-width D
    (recorded, and what a resume rebuilds), lazy R1 + R2 on every second step, DiffAugment, the
    relativistic loss, an EMA half-life."""
    cfg = _cfg(tmp_path, steps=4, bcr=False, d_width=0.5, penalty="r1+r2", penalty_every=2,
               loss="rpgan", diffaug=True, ema_kimg=1, ema_rampup=0.05, checkpoint_every=2)
    trainer = Trainer(cfg, progress=False)
    trainer.run()
    assert trainer.D.config.channels == (32, 64, 128, 128)
    with open(f"{cfg.out}/log.jsonl") as f:
        lines = [json.loads(x) for x in f]
    assert [("D/r1" in x, "D/r2" in x) for x in lines] == [(True, True), (False, False)] * 2
    assert all(math.isfinite(x["D/loss"]) for x in lines)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["discriminator"]["channels"] == [32, 64, 128, 128]
    resumed = Trainer(_cfg(tmp_path, steps=4, d_width=0.5, resume="auto"), progress=False)
    assert resumed.step == 4


def test_adaptive_augmentation_steers_p_by_ds_sign_on_reals(tmp_path):
    """--ada-target: every 4 steps p moves by ADA's rule from the logged E[sign(D(reals))]
    (here by 4 x 4 / 8 = 2, so to 0 or 1 at once); a resumed run goes on with p and the steps
    of the unfinished interval."""
    cfg = _cfg(tmp_path, steps=6, ada_target=0.5, ada_kimg=0.008, checkpoint_every=1000)
    trainer = Trainer(cfg, progress=False)
    trainer.run()
    with open(f"{cfg.out}/log.jsonl") as f:
        lines = [json.loads(x) for x in f]
    assert [x["ada/p"] for x in lines[:4]] == [0.0] * 4
    rt = sum(x["D/real_sign"] for x in lines[:4]) / 4
    assert lines[3]["ada/rt"] == pytest.approx(rt)
    assert [x["ada/p"] for x in lines[4:]] == [1.0 if rt > 0.5 else 0.0] * 2
    assert len(trainer.ada.signs) == 2
    resumed = Trainer(_cfg(tmp_path, steps=6, ada_target=0.5, ada_kimg=0.008, resume="auto"),
                      progress=False)
    assert resumed.step == 6 and resumed.ada == trainer.ada


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_adaptive_augmentation_augments_each_input_of_d_with_probability_p(tmp_path, p):
    """D sees each real (and fake) as it is or as its DiffAugmented copy: none at p = 0, every
    one at p = 1, some at p = 0.5; at p = 0 the step is the plain step's."""
    trainer = Trainer(_cfg(tmp_path, batch=8, bcr=False, ada_target=0.6), progress=False)
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, images, labels=None):
            seen.append(images.detach().clone())
            return trainer.D(images, labels)

    reals = torch.rand(8, trainer.D.config.in_channels, 32, 32) * 2 - 1
    x = phases.Inputs(reals, torch.randn(8, trainer.G.config.latent_dim), 0, seed=5, aug_p=p)
    loss = dataclasses.replace(trainer.loss, D=Recorder())
    out = loss(x, phases.Dreg(r1=True))
    _, real_in = seen
    same = [torch.equal(real_in[i], reals[i]) for i in range(8)]
    assert {0.0: all(same), 1.0: not any(same), 0.5: 0 < sum(same) < 8}[p], same
    assert -1 <= out["D/real_sign"] <= 1 and torch.isfinite(out["D/r1"])
    if p == 0.0:
        plain = dataclasses.replace(loss, cfg=dataclasses.replace(trainer.cfg, ada_target=None))
        torch.testing.assert_close(plain(x, phases.Dreg(r1=True))["D/loss"], out["D/loss"],
                                   rtol=0, atol=0)


def test_output_init_from_the_data(tmp_path):
    """--output-init data: G's first images have the training images' per-channel mean and
    std (measured the same way), G_ema starts from the same weights, and a resume keeps the
    trained weights rather than re-initialising them."""
    trainer = Trainer(_cfg(tmp_path, steps=2, bcr=False, output_init="data",
                           checkpoint_every=2), progress=False)
    mean, std = trainer.data_statistics()
    assert mean.max() < -0.5  # the digits: mostly black background
    z = torch.randn(256, trainer.G.config.latent_dim,
                    generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = trainer.G.train()(z)
    torch.testing.assert_close(out.mean((0, 2, 3)), mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std((0, 2, 3)), std, atol=1e-4, rtol=1e-3)
    for a, b in zip(trainer.G.parameters(), trainer.ema.model.parameters(), strict=True):
        assert torch.equal(a, b)
    plain = Trainer(_cfg(tmp_path / "plain", steps=2, bcr=False), progress=False)
    with torch.no_grad():
        assert plain.G.train()(z).std() < 0.2  # the official init: near grey
    trainer.run()
    trained = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    resumed = Trainer(_cfg(tmp_path, steps=2, bcr=False, output_init="data", resume="auto"),
                      progress=False)
    assert all(torch.equal(v, resumed.G.state_dict()[k]) for k, v in trained.items())
