"""The HiT-GAN training loop (official trainers/gan_trainer.py), single process to multi-node.

One step: G makes fakes from standard-normal z; D scores fakes and reals (with R1 on reals);
optionally bCR on DiffAugmented copies; G and D are updated simultaneously from the same forward,
as the official trainer does, then the EMA. Class-conditional (``--cond``): reals come with their
labels, fakes get labels drawn from the dataset's labels (StyleGAN2-ADA's choice, so G is asked
for classes as often as they occur), and every D call gets the labels of its images. All
randomness of a step (latents, flips, augmentations, fake labels) comes from one generator drawn
for the global batch, and data order from (seed, epoch) permutations, so a resumed run continues
bit for bit.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import json
import logging
import math
import random
import signal
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from hitgan.data.dataset import ImageDataset, Labelled, Preprocess
from hitgan.data.images import make_grid, save_image, to_uint8
from hitgan.models.discriminator import StyleGANDiscriminator
from hitgan.models.generator import HiTGenerator
from hitgan.models.io import load_state_checked, state_dict_to_bytes, weights_from_bytes
from hitgan.training import checkpoint
from hitgan.training.augment import diff_augment
from hitgan.training.config import TrainConfig
from hitgan.training.distributed import (
    DistInfo,
    PeerLost,
    StepSampler,
    any_process,
    average_gradients,
    broadcast_module,
    init_distributed,
    is_peer_failure,
)
from hitgan.training.ema import EMA
from hitgan.training.losses import (
    consistency_loss,
    d_loss,
    g_loss,
    mode_seeking_loss,
    r1_penalty,
    wgan_gp,
)
from hitgan.training.optim import official_adam

log = logging.getLogger(__name__)
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# What the loader yields per micro-batch: images (b, C, R, R), or [images, labels (b,)] (--cond)
MicroBatch = torch.Tensor | list[torch.Tensor]
SAMPLES_PER_CLASS = 8  # conditional sample grids: one row of this many latents per class


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row; the last good checkpoint is left as it was."""


class Trainer:
    def __init__(self, cfg: TrainConfig, info: DistInfo | None = None, progress: bool = True):
        self.cfg, self.info = cfg, info or init_distributed()
        self.run_dir, self.progress = Path(cfg.out), progress and self.info.is_main
        dev = self.info.device
        self.micro, self.accum = cfg.micro_batch(self.info.world)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(cfg.seed)
        self.dataset = ImageDataset(cfg.data, Preprocess(cfg.resolution, cfg.crop,
                                                         cfg.crop_proportion),
                                    strict=cfg.strict_data, seed=cfg.seed,
                                    progress=self.progress,
                                    labels="require" if cfg.cond else "none")
        labels = self.dataset.labels
        self.label_values = None if labels is None else torch.from_numpy(labels.values)
        gen_cfg, disc_cfg = cfg.generator_config(), cfg.discriminator_config()
        if labels is not None:
            gen_cfg = dataclasses.replace(gen_cfg, num_classes=labels.num_classes,
                                          class_names=labels.class_names)
            disc_cfg = dataclasses.replace(disc_cfg, num_classes=labels.num_classes)
        self.G = HiTGenerator(gen_cfg).to(dev)
        self.D = StyleGANDiscriminator(disc_cfg).to(dev)
        self.D.to(memory_format=torch.channels_last)
        broadcast_module(self.G)
        broadcast_module(self.D)
        self.ema = EMA(self.G, cfg.ema_decay, cfg.ema_start, cfg.ema_buffers)
        self.G_step = torch.compile(self.G) if cfg.compile else self.G  # D needs double backward
        self.opt_g = official_adam(self.G.parameters(), cfg.lr_g, cfg.betas)
        self.opt_d = official_adam(self.D.parameters(), cfg.lr_d, cfg.betas)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=cfg.precision == "fp16")
        self.gen = torch.Generator().manual_seed(cfg.seed)  # identical on every process
        self.sample_z = torch.randn(64, self.G.config.latent_dim,
                                    generator=torch.Generator().manual_seed(cfg.seed + 1))
        self.sample_labels: torch.Tensor | None = None
        if labels is not None:  # a row per class: the same SAMPLES_PER_CLASS latents each
            k = labels.num_classes
            self.sample_z = self.sample_z[:SAMPLES_PER_CLASS].repeat(k, 1)
            self.sample_labels = torch.arange(k).repeat_interleave(SAMPLES_PER_CLASS)
        self.step = self.nonfinite = self.skipped = 0
        self.best_fid, self.best_step = math.inf, None
        self.stop_requested = False
        self._reference: Any = None
        self._extractor: Any = None
        if cfg.output_init == "data":  # a resumed run then loads its own weights over these
            self.G.match_output_statistics(*self.data_statistics(), seed=cfg.seed)
            self.ema.model.load_state_dict(self.G.state_dict())
        self.resumed_from = self._resume() if cfg.resume else None

    def data_statistics(self, images: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of a seeded random subset of the training images (every
        process draws the same subset)."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        pick = torch.randperm(len(self.dataset), generator=gen)[:images].tolist()
        reals = torch.stack([self.dataset[i] for i in pick])  # (N, C, R, R) in [-1, 1]
        return reals.mean((0, 2, 3)), reals.std((0, 2, 3))

    # ---- one step -----------------------------------------------------------------------
    def _autocast(self, enabled: bool = True):
        dtype = AMP_DTYPES.get(self.cfg.precision)
        if dtype is None or not enabled:
            return nullcontext()
        return torch.autocast(self.info.device.type, dtype=dtype)

    def _losses(self, reals: torch.Tensor, z: torch.Tensor, offset: int, regularize: bool,
                step_seed: int, real_labels: torch.Tensor | None = None,
                fake_labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Losses of one micro-batch; the labels (b,) are given for a conditional run."""
        cfg, B = self.cfg, self.cfg.batch
        calls = iter(range(1, 100))

        def draw() -> torch.Generator:
            """The k-th random draw of every micro-batch covers the same global batch."""
            return torch.Generator().manual_seed(step_seed + next(calls))

        def augment(x: torch.Tensor) -> torch.Tensor:
            return diff_augment(x, cfg.augment, draw(), offset, B)

        with self._autocast():
            fakes = self.G_step(z, fake_labels)  # (b, 3, R, R)
            fake_in = augment(fakes) if cfg.diffaug else fakes
            fake_logits = self.D(fake_in, fake_labels)
            if regularize and cfg.penalty == "r1+r2":  # R2: the gradient at the fakes D saw
                r2 = r1_penalty(fake_logits, fake_in)
        r1 = regularize and cfg.penalty in ("r1", "r1+r2")
        real_in = (augment(reals) if cfg.diffaug else reals).detach().requires_grad_(r1)
        with self._autocast(enabled=not (r1 and cfg.precision == "fp16")):  # R1 in fp32 w/ fp16
            real_logits = self.D(real_in, real_labels)
            out = {"G/loss": g_loss(fake_logits, cfg.loss, real_logits),
                   "D/loss_gan": d_loss(real_logits, fake_logits, cfg.loss)}
            if cfg.mode_seeking:
                out["G/mode_seeking"] = mode_seeking_loss(fakes, z)
                out["G/loss"] = out["G/loss"] + cfg.mode_seeking * out["G/mode_seeking"]
            if regularize and r1:
                out["D/r1"] = r1_penalty(real_logits, real_in)
                if cfg.penalty == "r1+r2":
                    out["D/r2"] = r2
            elif regularize:
                eps = torch.rand(B, *reals.shape[1:], generator=draw())
                eps = eps[offset:offset + reals.shape[0]].to(reals)
                # interpolates between real i and fake i are scored as real i's class
                out["D/wgan_gp"] = wgan_gp(functools.partial(self.D, labels=real_labels),
                                           real_in.detach(), fakes, eps)
            penalties = [v for k, v in out.items() if k in ("D/r1", "D/r2", "D/wgan_gp")]
            d_total = out["D/loss_gan"] + cfg.penalty_cost * cfg.penalty_every * sum(penalties)
            if cfg.bcr:  # augmented copies carry no gradient into G, as in the official code
                aug = torch.cat((augment(reals), augment(fakes.detach()))).detach()
                aug_labels = (None if real_labels is None or fake_labels is None
                              else torch.cat((real_labels, fake_labels)))
                real_aug, fake_aug = self.D(aug, aug_labels).chunk(2)
                out["D/bcr"] = consistency_loss(real_logits, real_aug, fake_logits, fake_aug)
                d_total = d_total + cfg.bcr_cost * out["D/bcr"]
        out["D/loss"] = d_total
        return out

    def accumulate_gradients(self, micro_batches: list[MicroBatch]
                             ) -> tuple[dict[str, float], bool]:
        """Draw the step's latents, flips, augmentation seed (and fake labels), and accumulate
        G's and D's gradients over the micro-batches. Returns this process's losses and whether
        they were finite; updates nothing but the gradients (and BatchNorm statistics)."""
        cfg, info = self.cfg, self.info
        self.G.train()
        self.D.train()
        z_all = torch.randn(cfg.batch, self.G.config.latent_dim, generator=self.gen)
        flips = torch.rand(cfg.batch, generator=self.gen) < 0.5
        step_seed = int(torch.randint(0, 2**62, (1,), generator=self.gen))  # augmentations
        fake_labels_all = None  # drawn last: unconditional runs keep their random stream
        if self.label_values is not None:
            pick = torch.randint(len(self.label_values), (cfg.batch,), generator=self.gen)
            fake_labels_all = self.label_values[pick]  # (batch,)
            if cfg.mode_seeking:  # pairs of one class: rows 2i and 2i+1
                fake_labels_all = fake_labels_all[0::2].repeat_interleave(2)
        regularize = cfg.penalty != "none" and self.step % cfg.penalty_every == 0
        g_params, d_params = list(self.G.parameters()), list(self.D.parameters())
        stats: dict[str, float] = defaultdict(float)
        finite = True
        for a, batch in enumerate(micro_batches):
            offset = (a * info.world + info.rank) * self.micro
            rows = slice(offset, offset + self.micro)
            reals, real_labels = batch if isinstance(batch, list | tuple) else (batch, None)
            if (real_labels is None) != (fake_labels_all is None):
                raise ValueError("a conditional run needs [images, labels] micro-batches and "
                                 "an unconditional one images alone")
            fake_labels = None
            if real_labels is not None and fake_labels_all is not None:
                real_labels = real_labels.to(info.device, non_blocking=True)
                fake_labels = fake_labels_all[rows].to(info.device)
            reals = reals.to(info.device, non_blocking=True)
            if cfg.flip:
                reals = torch.where(flips[rows].view(-1, 1, 1, 1).to(info.device),
                                    reals.flip(3), reals)
            reals = reals.contiguous(memory_format=torch.channels_last)
            losses = self._losses(reals, z_all[rows].to(info.device), offset, regularize,
                                  step_seed, real_labels, fake_labels)
            finite &= bool(torch.isfinite(losses["G/loss"]) & torch.isfinite(losses["D/loss"]))
            self.scaler.scale(losses["G/loss"] / self.accum).backward(inputs=g_params,
                                                                       retain_graph=True)
            self.scaler.scale(losses["D/loss"] / self.accum).backward(inputs=d_params)
            for k, v in losses.items():
                stats[k] += v.item() / self.accum
        return stats, finite

    def train_step(self, micro_batches: list[MicroBatch]) -> dict[str, float]:
        cfg, info = self.cfg, self.info
        g_params, d_params = list(self.G.parameters()), list(self.D.parameters())
        saved_buffers = [b.clone() for b in self.G.buffers()]  # BatchNorm statistics
        stats, finite = self.accumulate_gradients(micro_batches)
        average_gradients(g_params, info.world)
        average_gradients(d_params, info.world)
        stats = _mean_over_processes(stats, info)
        stats["G/grad_norm"] = grad_norm(g_params)
        stats["D/grad_norm"] = grad_norm(d_params)
        if cfg.precision != "fp16":  # fp16: the grad scaler skips inf gradients itself
            finite &= math.isfinite(stats["G/grad_norm"] + stats["D/grad_norm"])
        self.step += 1
        if any_process(not finite, info.device):  # skip: no update, statistics restored
            for b, saved in zip(self.G.buffers(), saved_buffers, strict=True):
                b.copy_(saved)
            self.opt_g.zero_grad(set_to_none=True)
            self.opt_d.zero_grad(set_to_none=True)
            self.nonfinite += 1
            self.skipped += 1
            stats["skipped"] = 1.0
            return stats
        self.nonfinite = 0
        self.scaler.step(self.opt_g)
        self.scaler.step(self.opt_d)
        self.scaler.update()
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        self.ema.update(self.G, self.step, self.ema_decay())
        return stats

    def ema_decay(self) -> float:
        """This step's EMA decay: ema_decay, or from the half-life ema_kimg (ramped up)."""
        cfg = self.cfg
        if cfg.ema_kimg is None:
            return cfg.ema_decay
        half_life = cfg.ema_kimg * 1000  # images
        if cfg.ema_rampup is not None:
            half_life = min(half_life, self.step * cfg.batch * cfg.ema_rampup)
        return 0.5 ** (cfg.batch / max(half_life, 1e-8))

    # ---- the run ----------------------------------------------------------------------
    def loader(self) -> DataLoader:
        sampler = StepSampler(len(self.dataset), self.cfg.batch, self.micro, self.info.rank,
                              self.info.world, self.cfg.seed, start_step=self.step)
        data = self.dataset if self.label_values is None else Labelled(self.dataset)
        return DataLoader(data, batch_sampler=sampler, num_workers=self.cfg.workers,
                          pin_memory=self.info.device.type == "cuda",
                          prefetch_factor=4 if self.cfg.workers else None)

    def run(self) -> dict[str, Any]:
        cfg, main = self.cfg, self.info.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(self._run_record(), indent=2))
        writer = _tensorboard(self.run_dir) if main else None
        previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGTERM,
                                                                        signal.SIGINT)}
        batches = iter(self.loader())
        bar = self._progress_bar()
        last_saved, t0, seen0 = self.step, time.perf_counter(), self.step
        try:
            if main and self.step == 0:
                reals = next(iter(DataLoader(self.dataset, batch_size=64, shuffle=False)))
                save_image(make_grid(to_uint8(reals)), self.run_dir / "reals.png")
            while self.step < cfg.steps and not any_process(
                    self.stop_requested or self._out_of_time(t0), self.info.device):
                stats = self.train_step([next(batches) for _ in range(self.accum)])
                elapsed = time.perf_counter() - t0
                rate = (self.step - seen0) * cfg.batch / elapsed
                bar.set_postfix_str(f"step {self.step}/{cfg.steps} img/s {rate:.1f} "
                                    f"G {stats['G/loss']:.3f} D {stats['D/loss']:.3f}",
                                    refresh=False)
                bar.update(1 if cfg.max_minutes is None else min(elapsed, bar.total) - bar.n)
                if main and (self.step % cfg.log_every == 0 or stats.get("skipped")):
                    self._log({**stats, "img_per_s": rate}, writer)
                if self.nonfinite >= cfg.nan_patience:
                    raise TrainingDiverged(
                        f"{self.nonfinite} non-finite steps in a row at step {self.step}; "
                        f"the last good checkpoint in {checkpoint.checkpoint_dir(self.run_dir)}"
                        " is intact; lower the learning rate or use --precision fp32")
                if main and self.step % cfg.sample_every == 0:
                    self.save_samples(writer)
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    self._evaluate(writer)
                if self.step % cfg.checkpoint_every == 0 and self.nonfinite == 0:
                    self.save_checkpoint()
                    last_saved = self.step
            if self.step != last_saved:  # finished or stopped by a signal
                self.save_checkpoint()
            if main:
                self.save_samples(writer)
        except RuntimeError as e:
            if self.info.world == 1 or not is_peer_failure(e):
                raise
            found = checkpoint.latest_valid(self.run_dir) if main else None
            where = (f"the newest complete checkpoint, {found[0]}, is valid" if found else
                     f"process 0 keeps the checkpoints in {checkpoint.checkpoint_dir(self.run_dir)}"
                     if not main else "no checkpoint had been completed yet")
            lost = PeerLost(
                f"process {self.info.rank} of {self.info.world} lost contact with the others "
                f"at step {self.step} (a process died, or its node went down): "
                f"{str(e).splitlines()[0][:200]}; {where}. Run the same command with "
                "--resume auto to continue.")
            # Said here, while our signal handler still stands: a launcher that saw the other
            # process die sends SIGTERM, which must not end this one before the message is out.
            log.error("training stopped: %s", lost)
            raise lost from e
        finally:
            bar.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            if writer is not None:
                writer.close()
        return {"step": self.step, "skipped": self.skipped, "stopped": self.stop_requested}

    def _progress_bar(self) -> tqdm:
        """Steps done of --steps; with --max-minutes, seconds spent of the time budget (the
        run ends at whichever comes first, and the steps are in the bar's text)."""
        if self.cfg.max_minutes is None:
            return tqdm(total=self.cfg.steps, initial=self.step, disable=not self.progress,
                        unit="step", dynamic_ncols=True)
        return tqdm(total=round(self.cfg.max_minutes * 60), disable=not self.progress,
                    unit="s", dynamic_ncols=True, desc="time budget",
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} s "
                    "[{elapsed}<{remaining}{postfix}]")

    def _out_of_time(self, t0: float) -> bool:
        budget = self.cfg.max_minutes
        return budget is not None and time.perf_counter() - t0 >= budget * 60

    def _request_stop(self, signum: int, frame: Any) -> None:
        log.warning("signal %d: saving a checkpoint at the end of this step", signum)
        self.stop_requested = True

    def _log(self, stats: dict[str, float], writer: Any) -> None:
        record = {"step": self.step, "images": self.step * self.cfg.batch,
                  "lr_g": self.opt_g.param_groups[0]["lr"],
                  "lr_d": self.opt_d.param_groups[0]["lr"], "skipped_total": self.skipped,
                  **stats}
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if writer is not None:
            for k, v in record.items():
                if k != "step":
                    writer.add_scalar(k, v, self.step)

    def sampling_generator(self) -> HiTGenerator:
        """G_ema, with BatchNorm statistics recomputed unless --bn-recalibrate 0."""
        if not self.cfg.bn_recalibrate:
            return self.ema.model.eval()
        G = copy.deepcopy(self.ema.model)
        return G.recalibrate_batchnorm(self.cfg.bn_recalibrate, seed=self.cfg.seed).eval()

    @torch.no_grad()
    def save_samples(self, writer: Any = None) -> Path:
        """The grid of the fixed sample latents to samples/, and as the image ``samples`` of
        TensorBoard's writer when there is one."""
        G, dev = self.sampling_generator(), self.info.device
        labels = (self.sample_labels.split(16) if self.sample_labels is not None
                  else [None] * len(self.sample_z.split(16)))
        images = torch.cat([G(z.to(dev), None if y is None else y.to(dev))
                            for z, y in zip(self.sample_z.split(16), labels, strict=True)])
        path = self.run_dir / "samples" / f"step-{self.step:08d}.png"
        grid = make_grid(to_uint8(images), SAMPLES_PER_CLASS if labels[0] is not None
                         else None)  # (H, W, C) uint8
        save_image(grid, path)
        if writer is not None:
            writer.add_image("samples", grid, self.step, dataformats="HWC")
        return path

    def _evaluate(self, writer: Any) -> None:
        """FID/KID of the sampling generator against the training data (statistics cached in
        the run directory); a new best FID gets a checkpoint that pruning keeps."""
        from hitgan.metrics.evaluate import append_jsonl, evaluate, load_reference
        from hitgan.metrics.features import InceptionExtractor

        if self._reference is None:
            self._extractor = InceptionExtractor.for_job(self.cfg.eval_samples,
                                                         self.info.device)
            crop = "center" if self.cfg.crop == "random" else self.cfg.crop
            self._reference, _ = load_reference(
                self.cfg.data, Preprocess(self.cfg.resolution, crop, self.cfg.crop_proportion),
                self._extractor, cache_dir=self.run_dir / "stats-cache")
        result = evaluate(self.sampling_generator(), self._reference, ("fid", "kid"),
                          self.cfg.eval_samples, seed=self.cfg.seed, extractor=self._extractor,
                          progress=self.progress)
        fid = next(v for k, v in result.results.items() if k.startswith("fid"))
        if self.info.is_main:
            append_jsonl(self.run_dir / "metrics.jsonl", result.record(step=self.step))
            if writer is not None:
                for k, v in result.results.items():
                    writer.add_scalar(f"metrics/{k}", v, self.step)
        if fid < self.best_fid:
            self.best_fid, self.best_step = fid, self.step
            self.save_checkpoint()

    # ---- checkpoints --------------------------------------------------------------------
    def _run_record(self) -> dict[str, Any]:
        return {"train": self.cfg.to_dict(), "generator": self.G.config.to_dict(),
                "discriminator": self.D.config.to_dict(), "world": self.info.world,
                "dataset": self.dataset.describe()}

    def save_checkpoint(self) -> Path | None:
        rng = _rng_state()
        ranks = [rng] * self.info.world
        if dist.is_initialized():
            dist.all_gather_object(ranks, rng)  # in-process, trusted
        if not self.info.is_main:
            return None
        opt = io.BytesIO()
        torch.save({"G": self.opt_g.state_dict(), "D": self.opt_d.state_dict(),
                    "scaler": self.scaler.state_dict(), "gen": self.gen.get_state(),
                    "torch_rng": [r["torch"] for r in ranks]}, opt)
        state = {"step": self.step, "images_seen": self.step * self.cfg.batch,
                 "skipped": self.skipped, "nonfinite": self.nonfinite,
                 "best_fid": None if math.isinf(self.best_fid) else self.best_fid,
                 "best_step": self.best_step,
                 "rng": [{k: v for k, v in r.items() if k != "torch"} for r in ranks],
                 **self._run_record()}
        files = {"G.safetensors": state_dict_to_bytes(self.G.state_dict(), {}),
                 "D.safetensors": state_dict_to_bytes(self.D.state_dict(), {}),
                 "G_ema.safetensors": state_dict_to_bytes(self.ema.model.state_dict(), {}),
                 "optim.pt": opt.getvalue(), "state.json": json.dumps(state).encode()}
        return checkpoint.save(self.run_dir, self.step, files, self.cfg.keep_checkpoints,
                               protect=self.best_step)

    def _resume(self) -> Path | None:
        if self.cfg.resume == "auto":
            found = checkpoint.latest_valid(self.run_dir)
            if found is None:
                log.info("resume auto: no valid checkpoint in %s, starting fresh", self.run_dir)
                return None
            path, files = found
        else:
            path = Path(self.cfg.resume)
            files = checkpoint.verify(path)
        state = json.loads(files["state.json"])
        if state["train"]["preset"] != self.cfg.preset:
            raise checkpoint.CheckpointError(
                f"{path}: made with preset {state['train']['preset']}, not {self.cfg.preset}")
        if state["train"].get("cond", False) != self.cfg.cond:
            raise checkpoint.CheckpointError(
                f"{path}: made {'with' if state['train'].get('cond') else 'without'} --cond; "
                "resume it the same way")
        for name, model in (("G", self.G), ("D", self.D), ("G_ema", self.ema.model)):
            tensors, _ = weights_from_bytes(files[f"{name}.safetensors"], f"{path}/{name}")
            load_state_checked(model, tensors, f"{path}/{name}.safetensors")
        opt = torch.load(io.BytesIO(files["optim.pt"]), weights_only=True)
        self.opt_g.load_state_dict(opt["G"])
        self.opt_d.load_state_dict(opt["D"])
        self.scaler.load_state_dict(opt["scaler"])
        self.gen.set_state(opt["gen"])
        self.step, self.skipped = state["step"], state["skipped"]
        self.nonfinite = state["nonfinite"]
        self.best_fid = state["best_fid"] if state["best_fid"] is not None else math.inf
        self.best_step = state["best_step"]
        if len(state["rng"]) == self.info.world:
            _set_rng_state({**state["rng"][self.info.rank],
                            "torch": opt["torch_rng"][self.info.rank]})
        else:
            log.warning("%s: saved with %d processes, now %d: per-process RNG states not "
                        "restored (the training stream itself is unaffected)", path,
                        len(state["rng"]), self.info.world)
        log.info("resumed from %s at step %d", path, self.step)
        return path


def _mean_over_processes(stats: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Losses of the global batch: each process logged the mean over its own images."""
    if info.world == 1:
        return stats
    keys = sorted(stats)
    values = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(values)
    return dict(zip(keys, (values / info.world).tolist(), strict=True))


def grad_norm(params: list[torch.Tensor]) -> float:
    """The norm of the per-tensor gradient norms (what the step logs as G/ and D/grad_norm)."""
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    return {"torch": torch.get_rng_state(), "numpy": [kind, keys.tolist(), pos, has_gauss,
                                                      gauss],
            "python": [py[0], list(py[1]), py[2]]}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard not installed: scalars go to %s and sample grids to %s only",
                 run_dir / "log.jsonl", run_dir / "samples")
        return None
    return SummaryWriter(str(run_dir / "tb"))
