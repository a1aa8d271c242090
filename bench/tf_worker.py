"""The official HiT-GAN (TensorFlow) timed in a worker process for bench/.

Run by bench/official.py under the Python of a separate TF install, with the official checkout
on its path; it never imports torch or hitgan. Arguments: official checkout, intra-op threads,
malloc caching ("1" applies the glibc setting of hitgan/runtime.py). Protocol: one JSON request
per stdin line; every reply is one stdout line "@@" + JSON (the first one names the versions;
a failed request answers {"error": ...}). Requests, by "op":

- ``gen_setup`` (size, batch, latent, repeats): build HiTGenerator(output_size=size), warm up,
  and keep the faster of eager and tf.function (best of ``repeats`` forwards).
- ``gen_time`` (size, batch, latent, repeats): (wall s, CPU s / wall s) per forward.
- ``train_setup`` (size, batch, latent, bcr, lr_g, lr_d, channel_multiplier, blur_resample,
  augment, ema_decay, warmup): the official training step (below) in a tf.function, traced and
  run ``warmup`` times; answers the losses of the first step.
- ``train_time`` (size, batch, bcr, repeats): (wall s, CPU s / wall s) per step, the losses of
  the last step and the process's peak resident memory over these steps.
- ``train_free`` (size, batch, bcr): drop that step's models and hand the freed memory back
  to the OS (malloc_trim), so that the next configuration does not stack on it.
- ``quit``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

R1_COST = 10.0  # official run.py --grad_penalty_cost default
BCR_COST = 10.0  # official --consistency_regularization_cost default


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write("@@" + json.dumps(obj) + "\n")
    sys.stdout.flush()


def timed(fn: Callable[[], Any], n: int) -> list[tuple[float, float]]:
    """(wall seconds, process CPU seconds / wall seconds) of ``n`` calls; ``fn`` returns a
    tensor, read back so that the work is done."""
    out = []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        fn().numpy()
        wall = time.perf_counter() - t
        out.append((wall, (time.process_time() - c) / wall))
    return out


def memory_kib(field: str) -> int | None:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM), None where unavailable."""
    try:
        with open("/proc/self/status") as f:
            return next((int(ln.split()[1]) for ln in f if ln.startswith(field + ":")), None)
    except OSError:
        return None


def reset_peak_memory() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def cache_large_allocations() -> bool:
    """The same glibc setting as hitgan/runtime.py, for a like-for-like run."""
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 1 << 30)) and bool(libc.mallopt(-1, -1))
    except (OSError, AttributeError):
        return False


class TrainStep:
    """One step of the official GANTrainer._train_one_step (trainers/gan_trainer.py) with the
    official models, losses and Adam, on a fixed batch of reals.

    As the official step: latents drawn inside the step; G and D losses from one forward under
    two GradientTapes; R1 on reals via losses.r1_gradient_penalty (nested tape, so D's update
    differentiates through the input gradient); bCR on stop_gradient'ed DiffAugment copies of
    reals and fakes in one D call; both Adam updates; then the EMA of G. Left out: the metric
    updates (keras Mean accumulators), the division by the replica count (1 here) and the
    distribution strategy (the default, single-device one). The EMA updates every step, the
    official steady state (it starts at step 10 there).
    """

    def __init__(self, tf: Any, official: dict[str, Any], req: dict[str, Any]):
        import numpy as np

        self.tf, self.req = tf, req
        self.losses, self.diff_augment = official["losses"], official["diff_augment"]
        self.moving_averages = official["moving_averages"]
        size, batch, latent = req["size"], req["batch"], req["latent"]
        tf.random.set_seed(0)
        self.generator = official["generators"].HiTGenerator(output_size=size)
        self.ema_generator = official["generators"].HiTGenerator(output_size=size)
        self.discriminator = official["discriminators"].StyleGANDiscriminator(
            input_size=size, channel_multiplier=req["channel_multiplier"],
            blur_resample=req["blur_resample"])
        adam = tf.keras.optimizers.Adam
        self.generator_optim = adam(req["lr_g"], beta_1=0.0, beta_2=0.99)
        self.discriminator_optim = adam(req["lr_d"], beta_1=0.0, beta_2=0.99)
        rng = np.random.default_rng(0)
        self.reals = tf.constant(rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32))
        self.ema_generator(tf.zeros((batch, latent)), training=False)  # create its variables
        self.step = tf.function(self._train_one_step)

    def _train_one_step(self) -> Any:
        tf, req, losses = self.tf, self.req, self.losses
        reals = self.reals
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            latents = tf.random.normal((req["batch"], req["latent"]))
            fakes = self.generator(latents, training=True)
            fake_logits = self.discriminator(fakes, training=True)
            real_logits, penalty = losses.r1_gradient_penalty(
                self.discriminator, reals, penalty_cost=R1_COST)
            if req["bcr"]:
                augment = self.diff_augment.augment
                both = tf.stop_gradient(tf.concat(
                    (augment(reals, policy=req["augment"]),
                     augment(fakes, policy=req["augment"])), axis=0))
                real_aug, fake_aug = tf.split(self.discriminator(both, training=True), 2, 0)
                consistency = BCR_COST * (losses.l2_loss(real_logits, real_aug)
                                          + losses.l2_loss(fake_logits, fake_aug))
            else:
                consistency = tf.constant(0.0)
            g_loss = losses.generator_loss(fake_logits, loss_type="non-saturating")
            d_loss = (losses.discriminator_loss(real_logits, fake_logits,
                                                loss_type="non-saturating")
                      + penalty + consistency)
        g_vars = self.generator.trainable_variables
        d_vars = self.discriminator.trainable_variables
        g_grads = g_tape.gradient(g_loss, g_vars)
        d_grads = d_tape.gradient(d_loss, d_vars)
        self.generator_optim.apply_gradients(zip(g_grads, g_vars, strict=True))
        self.discriminator_optim.apply_gradients(zip(d_grads, d_vars, strict=True))
        self.moving_averages.update_ema_variables(
            self.ema_generator.variables, self.generator.variables, req["ema_decay"])
        return tf.stack([g_loss, d_loss, penalty, consistency])


LOSS_NAMES = ("G/loss", "D/loss", "D/r1_cost", "D/bcr_cost")


def main() -> None:
    official, threads, malloc_cache = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    malloc_cache = cache_large_allocations() if malloc_cache else False
    sys.path.insert(0, official)
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from models import discriminators, generators
    from utils import diff_augment, losses, moving_averages

    modules = {"generators": generators, "discriminators": discriminators, "losses": losses,
               "diff_augment": diff_augment, "moving_averages": moving_averages}
    gen_models: dict[int, tuple[Any, Any]] = {}
    gen_runs: dict[tuple[int, int], Callable[[], Any]] = {}
    steps: dict[tuple[int, int, bool], TrainStep] = {}

    def losses_of(values: Any) -> dict[str, float]:
        return dict(zip(LOSS_NAMES, (float(v) for v in values.numpy()), strict=True))

    def gen_setup(req: dict[str, Any]) -> dict[str, Any]:
        size, batch = req["size"], req["batch"]
        if size not in gen_models:
            g = generators.HiTGenerator(output_size=size)
            gen_models[size] = (g, tf.function(lambda z, g=g: g(z, training=False)))
        g, fn = gen_models[size]
        z = tf.constant(np.random.default_rng(0).standard_normal((batch, req["latent"]),
                                                                  np.float32))
        modes = {"eager": lambda: g(z, training=False), "tf.function": lambda: fn(z)}
        for f in modes.values():  # warm-up: build, trace
            timed(f, 2)
        seconds = {m: min(w for w, _ in timed(f, req["repeats"])) for m, f in modes.items()}
        mode = min(seconds, key=seconds.__getitem__)
        gen_runs[(size, batch)] = modes[mode]
        return {"mode": mode, "seconds": seconds}

    def train_setup(req: dict[str, Any]) -> dict[str, Any]:
        key = (req["size"], req["batch"], bool(req["bcr"]))
        t = time.perf_counter()
        steps[key] = step = TrainStep(tf, modules, req)
        first = losses_of(step.step())  # traces the tf.function
        for _ in range(req["warmup"] - 1):
            step.step().numpy()
        return {"losses": first, "setup_s": time.perf_counter() - t}

    def train_time(req: dict[str, Any]) -> dict[str, Any]:
        step = steps[(req["size"], req["batch"], bool(req["bcr"]))]
        last: list[Any] = []

        def run() -> Any:
            last[:] = [step.step()]
            return last[0]

        reset_peak_memory()
        rss = memory_kib("VmRSS")
        times = timed(run, req["repeats"])
        peak = memory_kib("VmHWM")
        return {"times": times, "losses": losses_of(last[0]),
                "rss_bytes": None if rss is None else rss * 1024,
                "peak_bytes": None if peak is None else peak * 1024}

    def train_free(req: dict[str, Any]) -> dict[str, Any]:
        del steps[(req["size"], req["batch"], bool(req["bcr"]))]
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        return {"rss_bytes": (memory_kib("VmRSS") or 0) * 1024}

    def gen_time(req: dict[str, Any]) -> dict[str, Any]:
        return {"times": timed(gen_runs[(req["size"], req["batch"])], req["repeats"])}

    ops = {"gen_setup": gen_setup, "gen_time": gen_time, "train_setup": train_setup,
           "train_time": train_time, "train_free": train_free}
    reply({"tf": tf.__version__, "malloc_cache": malloc_cache,
           "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")})
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "quit":
            break
        try:
            reply(ops[req["op"]](req))
        except Exception as e:  # the client raises it with the traceback's tail
            reply({"error": f"{req['op']}: {e!r}\n{traceback.format_exc()[-2000:]}"})


if __name__ == "__main__":
    main()
