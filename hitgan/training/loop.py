"""The HiT-GAN training loop (official trainers/gan_trainer.py), single process to multi-node.

One step (``Trainer.train_step``): the loss phases of hitgan/training/phases.py (Gmain, Dmain,
Dreg every penalty_every steps, Dbcr) on every micro-batch, G's and D's gradients accumulated
from the same forward and averaged over processes, then G and D updated simultaneously, as the
official trainer does, and the EMA. Class-conditional (``--cond``): reals come with their
labels, fakes get labels drawn from the dataset's labels (StyleGAN2-ADA's choice, so G is asked
for classes as often as they occur), and every D call gets the labels of its images. All
randomness of a step (latents, flips, augmentations, fake labels) comes from one generator drawn
for the global batch, and data order from (seed, epoch) permutations, so a resumed run continues
bit for bit.

API: ``Trainer(cfg).run()`` trains (the CLI); ``train_step()`` makes one step from the trainer's
own loader (``next_micro_batches``) or from micro-batches given; ``accumulate_gradients`` computes
a step's gradients without updating, with the trainer's loss or another
(``dataclasses.replace(trainer.loss, precision=..., G=...)``); ``save_checkpoint``,
``save_samples`` and ``sampling_generator`` as ``run`` uses them.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from hitgan.data.dataset import ImageDataset, Labelled, Preprocess
from hitgan.data.images import make_grid, save_image, to_uint8
from hitgan.distributed import DistInfo, init_distributed
from hitgan.models.discriminator import StyleGANDiscriminator
from hitgan.models.generator import HiTGenerator
from hitgan.training import checkpoint
from hitgan.training.augment import AdaptiveProbability
from hitgan.training.config import TrainConfig
from hitgan.training.distributed import (
    PeerLost,
    StepSampler,
    any_process,
    average_gradients,
    broadcast_module,
    is_peer_failure,
)
from hitgan.training.ema import EMA
from hitgan.training.optim import official_adam
from hitgan.training.phases import GANLoss, MicroBatch, StepDraws, dreg_at

log = logging.getLogger(__name__)
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
        # channels: as configured, else read off the data (build_config usually has)
        channels = cfg.channels or self.dataset.channels_found(self.progress)
        self.dataset.set_channels(channels)
        gen_cfg = dataclasses.replace(cfg.generator_config(), out_channels=channels)
        disc_cfg = dataclasses.replace(cfg.discriminator_config(), in_channels=channels)
        if labels is not None:
            gen_cfg = dataclasses.replace(gen_cfg, num_classes=labels.num_classes,
                                          class_names=labels.class_names)
            disc_cfg = dataclasses.replace(disc_cfg, num_classes=labels.num_classes)
        self.G = HiTGenerator(gen_cfg).to(dev)
        self.D = StyleGANDiscriminator(disc_cfg).to(dev)
        self.D.to(memory_format=torch.channels_last)
        broadcast_module(self.G)
        broadcast_module(self.D)
        self.ema = EMA(self.G, cfg.ema_decay, cfg.ema_start, cfg.ema_buffers, cfg.ema_kimg,
                       cfg.ema_rampup, cfg.batch)
        G_forward = torch.compile(self.G) if cfg.compile else self.G  # D needs double backward
        self.loss = GANLoss(G_forward, self.D, cfg, cfg.precision, dev.type)
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
        self.ada = None if cfg.ada_target is None else AdaptiveProbability(
            cfg.ada_target, cfg.ada_kimg, cfg.batch)
        self.step = self.nonfinite = self.skipped = 0
        self.best_fid, self.best_step = math.inf, None
        self.stop_requested = False
        self._reference: Any = None
        self._extractor: Any = None
        self._batches: Iterator[MicroBatch] | None = None  # the loader's, once drawn from
        if cfg.output_init == "data":  # a resumed run then loads its own weights over these
            self.G.match_output_statistics(*self.data_statistics(), seed=cfg.seed)
            self.ema.model.load_state_dict(self.G.state_dict())
        self.resumed_from = self._resume(cfg.resume) if cfg.resume else None

    def data_statistics(self, images: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of a seeded random subset of the training images (every
        process draws the same subset)."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        pick = torch.randperm(len(self.dataset), generator=gen)[:images].tolist()
        reals = torch.stack([self.dataset[i] for i in pick])  # (N, C, R, R) in [-1, 1]
        return reals.mean((0, 2, 3)), reals.std((0, 2, 3))

    # ---- one step -----------------------------------------------------------------------
    def next_micro_batches(self) -> list[MicroBatch]:
        """The next step's ``accum`` micro-batches from the trainer's loader (its stream starts
        at the step this is first called at)."""
        if self._batches is None:
            self._batches = iter(self.loader())
        return [next(self._batches) for _ in range(self.accum)]

    def accumulate_gradients(self, micro_batches: list[MicroBatch], loss: GANLoss | None = None
                             ) -> tuple[dict[str, float], bool]:
        """Draw the step's latents, flips, augmentation seed (and fake labels) from ``gen``,
        and accumulate G's and D's gradients over the micro-batches with ``loss`` (default:
        the trainer's). Returns this process's losses and whether they were finite; updates
        nothing but the gradients, ``gen`` (and BatchNorm statistics)."""
        cfg, info, loss = self.cfg, self.info, loss or self.loss
        self.G.train()
        self.D.train()
        draws = StepDraws.draw(self.gen, cfg.batch, self.G.config.latent_dim, self.label_values,
                               pairs=bool(cfg.mode_seeking))
        dreg = dreg_at(cfg, self.step)
        g_params, d_params = list(self.G.parameters()), list(self.D.parameters())
        stats: dict[str, float] = defaultdict(float)
        finite = True
        for a, batch in enumerate(micro_batches):
            offset = (a * info.world + info.rank) * self.micro
            x = draws.inputs(batch, offset, self.micro, cfg.flip, info.device,
                             self.ada.p if self.ada else 0.0)
            losses = loss(x, dreg)
            finite &= bool(torch.isfinite(losses["G/loss"]) & torch.isfinite(losses["D/loss"]))
            self.scaler.scale(losses["G/loss"] / self.accum).backward(inputs=g_params,
                                                                       retain_graph=True)
            self.scaler.scale(losses["D/loss"] / self.accum).backward(inputs=d_params)
            for k, v in losses.items():
                stats[k] += v.item() / self.accum
        return stats, finite

    def train_step(self, micro_batches: list[MicroBatch] | None = None) -> dict[str, float]:
        """One update of G, D and the EMA, on ``micro_batches`` or the trainer's next ones.
        Returns the step's losses and gradient norms over all processes; a non-finite step
        updates nothing and returns "skipped": 1.0 among them."""
        cfg, info = self.cfg, self.info
        micro_batches = self.next_micro_batches() if micro_batches is None else micro_batches
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
        self.ema.update(self.G, self.step)
        if self.ada is not None:
            stats["ada/p"] = self.ada.p  # this step's
            self.ada.update(stats["D/real_sign"])
            if self.ada.rt is not None:
                stats["ada/rt"] = self.ada.rt
        return stats

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
        bar = self._progress_bar()
        last_saved, t0, seen0 = self.step, time.perf_counter(), self.step
        try:
            if main and self.step == 0:
                reals = next(iter(DataLoader(self.dataset, batch_size=64, shuffle=False)))
                save_image(make_grid(to_uint8(reals)), self.run_dir / "reals.png")
            while self.step < cfg.steps and not any_process(
                    self.stop_requested or self._out_of_time(t0), self.info.device):
                stats = self.train_step()
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

    def _training_state(self) -> checkpoint.TrainingState:
        return checkpoint.TrainingState(
            {"G": self.G, "D": self.D, "G_ema": self.ema.model},
            {"G": self.opt_g, "D": self.opt_d, "scaler": self.scaler}, self.gen)

    def save_checkpoint(self) -> Path | None:
        """Every process calls it; process 0 writes the checkpoint and gets its path."""
        state = {"step": self.step, "images_seen": self.step * self.cfg.batch,
                 "skipped": self.skipped, "nonfinite": self.nonfinite,
                 "best_fid": None if math.isinf(self.best_fid) else self.best_fid,
                 "best_step": self.best_step,
                 "ada": None if self.ada is None else self.ada.state_dict(),
                 **self._run_record()}
        return checkpoint.save_training(self.run_dir, self._training_state(), state, self.info,
                                        self.cfg.keep_checkpoints, protect=self.best_step)

    def _resume(self, resume: str) -> Path | None:
        found = checkpoint.find_resume(self.run_dir, resume)
        if found is None:
            return None
        state = checkpoint.load_training(*found, self._training_state(), self.cfg, self.info)
        self.step, self.skipped = state["step"], state["skipped"]
        self.nonfinite, self.best_step = state["nonfinite"], state["best_step"]
        self.best_fid = math.inf if state["best_fid"] is None else state["best_fid"]
        if self.ada is not None and state.get("ada"):  # else p starts again from 0
            self.ada.load_state_dict(state["ada"])
        log.info("resumed from %s at step %d", found[0], self.step)
        return found[0]


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


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard not installed: scalars go to %s and sample grids to %s only",
                 run_dir / "log.jsonl", run_dir / "samples")
        return None
    return SummaryWriter(str(run_dir / "tb"))
