"""Make tests/data/official_step.npz: one training step of the official HiT-GAN trainer.

Runs under the Python of a separate TF install (tensorflow-cpu + tf-keras, as bench/official.py),
never under hitgan's venv; TF is not a hitgan dependency and this script imports neither torch
nor hitgan (it loads hitgan/convert/tf_checkpoint.py by path, which needs TF only)::

    python3 -m venv tfvenv && tfvenv/bin/pip install tensorflow-cpu tf-keras
    tfvenv/bin/python tests/tools/official_step.py --official OFFICIAL_DIR \
        --out tests/data/official_step.npz

The step is the official ``GANTrainer._train_one_step`` itself (trainers/gan_trainer.py), run
eagerly on the default distribution strategy, with a small generator and discriminator built from
the official layer classes (the official models hard-code their stage tables) and every variable
set to a distinct seeded random value. Settings are the official defaults (run.py): non-saturating
loss, R1 cost 10 every step, Adam(beta1=0, beta2=0.99), EMA decay 0.999; the EMA starts at step 0
instead of 10 (``ema_inital_step=0``) so that one step performs an EMA update rather than the
copy, and the EMA generator starts from its own distinct values. The randomness of the step is
pinned: ``tf.random.normal`` returns the stored latents and ``tf.random.uniform`` the stored
DiffAugment parameters (colour factors, translations, cutout centres), in the order the official
code draws them (reals, then fakes; colour, translation, cutout), so hitgan can replay them.

Two records share the initial variables, latents and reals: ``plain`` (no bCR) and ``bcr``
(balanced consistency regularisation, cost 10, policy color,translation,cutout). Keys:

- ``meta``: JSON: model configs in the official argument names (``configs_from_meta``), the
  training settings, TF and official versions.
- ``z`` (B, latent), ``reals`` (B, H, W, 3) NHWC in [-1, 1].
- ``augment/{reals,fakes}/{brightness,saturation,contrast,shift_y,shift_x,cutout_y,cutout_x}``
  (B,): the raw draws (uniform [0, 1) colour factors; integer shifts along height/width; cutout
  centres), applied to the reals' and the fakes' copies in the bCR record.
- ``init/generator/...``, ``init/discriminator/...``, ``init_ema/generator/...``: variables
  before the step, named as in tests/data/README.md.
- per record R: ``R/loss/{G,D,D_gan,r1,bcr}`` (scalars; ``r1`` and ``bcr`` include their costs,
  as the official metrics), ``R/grad/{generator,discriminator}/...`` (gradients of the trainable
  variables), ``R/after/{generator,discriminator}/...`` (all variables after the step, BatchNorm
  moving statistics included), ``R/ema/generator/...`` (the EMA generator after the step).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

OFFICIAL_COMMIT = "06d310c"
BATCH = 4
LATENT = 16
SETTINGS = {"lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.0, "beta2": 0.99, "r1_cost": 10.0,
            "bcr_cost": 10.0, "ema_decay": 0.999, "ema_start": 0,
            "augment": "color,translation,cutout", "loss": "non-saturating"}
# Three stages, 8 -> 32 px: multi-axis attention at 8 px, MLP-only stages with SkipToRGB at 16
# and 32 px; the second pixel shuffle has no Linear (16 / 4 == 4).
GENERATOR = {"num_layers_per_block": [1, 1, 1], "channel_dim_per_block": [16, 16, 4],
             "num_heads_per_block": [4, 2, 2], "patch_size_per_block": [4, None, None],
             "attn_type": "multi_query", "norm_type": "batch"}
DISCRIMINATOR = {32: 8, 16: 16, 8: 16, 4: 16}  # channels by resolution
AUGMENT_KEYS = ("brightness", "saturation", "contrast", "shift_y", "shift_x", "cutout_y",
                "cutout_x")


def small_models(tf: Any, generators: Any, discriminators: Any, layers: Any) -> tuple[Any, Any]:
    """(generator class, discriminator class): the official models with the stage tables above.

    Each builds the same attributes from the same official layer classes as the official
    ``__init__`` and inherits the official ``call``."""

    class SmallHiTGenerator(generators.HiTGenerator):
        def __init__(self) -> None:
            tf.keras.Model.__init__(self)
            g = GENERATOR
            widths, patches = g["channel_dim_per_block"], g["patch_size_per_block"]
            self._patch_size_per_block, self._num_blocks = patches, len(widths)
            block_kwargs = {"norm_type": g["norm_type"], "activation": tf.nn.gelu}
            self.dense_layer = tf.keras.Sequential([
                tf.keras.layers.Dense(widths[0] * 8 * 8),
                tf.keras.layers.Reshape((8, 8, widths[0]))])
            self.embedding_layer = tf.keras.Sequential([
                tf.keras.layers.Dense(widths[0] * 4 * 4),
                tf.keras.layers.Reshape((1, 16, widths[0])),
                layers.PositionEmbedding(),
                layers.make_norm_layer(g["norm_type"])])
            self.position_embeddings, self.blocks = [], []
            self.umsamplings, self.to_rgb_layers = [], []
            for i, (heads, patch) in enumerate(zip(g["num_heads_per_block"], patches,
                                                   strict=True)):
                self.position_embeddings.append(layers.PositionEmbedding())
                block = tf.keras.Sequential([generators.Block(
                    num_heads=heads, attn_axes=[[1, 2]], attn_type=g["attn_type"],
                    **block_kwargs)])
                for _ in range(g["num_layers_per_block"][i]):
                    block.add(layers.MLP(**block_kwargs) if patch is None else generators.Block(
                        num_heads=heads, attn_axes=[[2], [1]], attn_type=g["attn_type"],
                        **block_kwargs))
                self.blocks.append(block)
                self.to_rgb_layers.append(
                    None if patch is not None else layers.SkipToRGB(3, norm_type=g["norm_type"]))
                if i + 1 < len(widths):
                    self.umsamplings.append(layers.PixelShuffle(output_dim=widths[i + 1]))

    class SmallStyleGANDiscriminator(discriminators.StyleGANDiscriminator):
        def __init__(self) -> None:
            tf.keras.Model.__init__(self)
            size = max(DISCRIMINATOR)
            self.conv_blocks = tf.keras.Sequential([
                tf.keras.layers.Conv2D(DISCRIMINATOR[size], 3, padding="SAME"),
                tf.keras.layers.LeakyReLU(0.2)])
            for i in range(int(math.log2(size)), 2, -1):
                self.conv_blocks.add(discriminators.Block(
                    DISCRIMINATOR[2 ** (i - 1)], 0.2, blur_resample=True))
            self.final_layers = tf.keras.Sequential([
                tf.keras.layers.Conv2D(DISCRIMINATOR[4], 3, padding="SAME"),
                tf.keras.layers.LeakyReLU(0.2),
                tf.keras.layers.Flatten(),
                tf.keras.layers.Dense(DISCRIMINATOR[4]),
                tf.keras.layers.LeakyReLU(0.2),
                tf.keras.layers.Dense(1)])

    return SmallHiTGenerator, SmallStyleGANDiscriminator


def randomize(model: Any, rng: np.random.Generator, gain: float) -> None:
    """Give every variable a distinct value that keeps activations of order one: kernels
    N(0, gain/fan_in), biases and shifts N(0, 0.1), scales 1 + N(0, 0.1), variances 1 + |N(0, 0.2)|,
    position embeddings N(0, 0.3)."""
    for v in model.variables:
        shape, name = v.shape.as_list(), v.name.split("/")[-1].split(":")[0]
        noise = rng.standard_normal(shape).astype(np.float32)
        if name == "kernel":
            value = noise * math.sqrt(gain / math.prod(shape[:-1]))
        elif name == "gamma":
            value = 1 + 0.1 * noise
        elif name == "moving_variance":
            value = 1 + 0.2 * np.abs(noise)
        elif name == "embedding_weight":
            value = 0.3 * noise
        else:
            assert name in ("bias", "beta", "moving_mean"), v.name
            value = 0.1 * noise
        v.assign(value)


@contextlib.contextmanager
def pinned_randomness(tf: Any, z: np.ndarray, uniforms: list[np.ndarray]) -> Iterator[None]:
    """``tf.random.normal`` returns ``z``; ``tf.random.uniform`` the next of ``uniforms``, which
    must have the requested shape and dtype and lie in [minval, maxval)."""
    normal, uniform = tf.random.normal, tf.random.uniform
    queue = list(uniforms)

    def fixed_normal(shape: Any, **kwargs: Any) -> Any:
        assert tuple(int(s) for s in shape) == z.shape, (shape, z.shape)
        return tf.constant(z)

    def fixed_uniform(shape: Any, minval: Any = 0, maxval: Any = None,
                      dtype: Any = tf.float32, **kwargs: Any) -> Any:
        value = queue.pop(0)
        hi = 1 if maxval is None else int(maxval)
        assert tuple(int(s) for s in shape) == value.shape, (shape, value.shape)
        assert tf.as_dtype(dtype) == tf.as_dtype(value.dtype), (dtype, value.dtype)
        assert int(minval) <= value.min() and value.max() < hi, (minval, maxval, value)
        return tf.constant(value)

    tf.random.normal, tf.random.uniform = fixed_normal, fixed_uniform
    try:
        yield
        assert not queue, f"{len(queue)} pinned uniform draws left unused"
    finally:
        tf.random.normal, tf.random.uniform = normal, uniform


def augment_draws(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """One image batch's DiffAugment parameters, in the official ranges (utils/diff_augment.py):
    colour factors uniform [0, 1); shifts in [-s, s] with s = int(size/8 + 0.5); cutout centres
    in [0, size + 1 - c % 2) with c = int(size/2 + 0.5)."""
    shift, cut = int(size * 0.125 + 0.5), int(size * 0.5 + 0.5)
    draws = {k: rng.random(BATCH, dtype=np.float32) for k in AUGMENT_KEYS[:3]}
    for k in ("shift_y", "shift_x"):
        draws[k] = rng.integers(-shift, shift + 1, BATCH).astype(np.int32)
    for k in ("cutout_y", "cutout_x"):
        draws[k] = rng.integers(0, size + 1 - cut % 2, BATCH).astype(np.int32)
    return draws


def official_uniforms(draws: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The values of the official ``tf.random.uniform`` calls of one ``augment`` call, in order
    and in their shapes: three colour factors (B, 1, 1, 1), translation_x/_y (B, 1) (x is the
    height axis in the official NHWC code), cutout offset_x/_y (B, 1, 1)."""
    return ([draws[k].reshape(BATCH, 1, 1, 1) for k in AUGMENT_KEYS[:3]]
            + [draws[k].reshape(BATCH, 1) for k in ("shift_y", "shift_x")]
            + [draws[k].reshape(BATCH, 1, 1) for k in ("cutout_y", "cutout_x")])


@contextlib.contextmanager
def recording(owner: Any, name: str) -> Iterator[list[tuple[tuple[Any, ...], Any]]]:
    """Wrap ``owner.<name>`` so that each call's (arguments, result) is recorded; an argument
    that is a ``zip`` (``apply_gradients``' pairs) is made a list first."""
    original = getattr(owner, name)
    calls: list[tuple[tuple[Any, ...], Any]] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args = tuple(list(a) if isinstance(a, zip) else a for a in args)
        calls.append((args, original(*args, **kwargs)))
        return calls[-1][1]

    setattr(owner, name, wrapper)
    try:
        yield calls
    finally:
        setattr(owner, name, original)


def official_step(tf: Any, gan_trainer: Any, losses: Any, models: tuple[Any, Any, Any],
                  bcr: bool, z: np.ndarray, reals: np.ndarray, uniforms: list[np.ndarray],
                  model_dir: Path) -> tuple[dict[str, float], dict[str, list[Any]]]:
    """One official ``GANTrainer._train_one_step`` on (G, D, EMA G) with pinned randomness.
    Returns the losses (the trainer's metrics plus the GAN part of D's loss) and the gradients
    given to each optimizer, in ``trainable_variables`` order."""
    trainer = gan_trainer.GANTrainer(
        generator_kwargs={}, discriminator_kwargs={}, latent_dim=LATENT,
        generator_lr=SETTINGS["lr_g"], discriminator_lr=SETTINGS["lr_d"],
        beta1=SETTINGS["beta1"], beta2=SETTINGS["beta2"], use_ema_model=True,
        ema_decay=SETTINGS["ema_decay"], ema_inital_step=SETTINGS["ema_start"],
        use_consistency_regularization=bcr, consistency_regularization_cost=SETTINGS["bcr_cost"],
        augment_policy=SETTINGS["augment"], gan_loss_type=SETTINGS["loss"],
        grad_penalty_type="r1", grad_penalty_cost=SETTINGS["r1_cost"],
        strategy=tf.distribute.get_strategy(), model_dir=str(model_dir),
        train_batch_size=BATCH, eval_batch_size=BATCH, dataset="none", train_steps=1)
    trainer.generator, trainer.discriminator, trainer.ema_generator = models
    trainer._build_optimizers()
    trainer._build_metrics()
    with (recording(trainer.generator_optim, "apply_gradients") as g_calls,
          recording(trainer.discriminator_optim, "apply_gradients") as d_calls,
          recording(losses, "discriminator_loss") as gan_calls,
          pinned_randomness(tf, z, uniforms)):
        trainer._train_one_step({"images": tf.constant(reals)})
    assert int(trainer.global_step) == 1 and len(g_calls) == len(d_calls) == len(gan_calls) == 1
    m = {k: float(v.result()) for k, v in trainer.train_metrics.items()}
    found = {"G": m["generator_total_loss"], "D": m["discriminator_total_loss"],
             "D_gan": float(gan_calls[0][1]), "r1": m["gradient_penalty"],
             "bcr": m["consistency_loss"]}
    grads = {who: [g for g, _ in calls[0][0][0]]
             for who, calls in (("generator", g_calls), ("discriminator", d_calls))}
    return found, grads


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", required=True, help="root of a google-research/hit-gan checkout")
    p.add_argument("--out", required=True, help="npz to write")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, args.official)
    # The trainer's module imports its dataset and FID helpers, which need tensorflow_datasets
    # and tensorflow_probability; the training step uses neither.
    for name in ("tensorflow_datasets", "tensorflow_probability"):
        sys.modules.setdefault(name, types.ModuleType(name))
    import tensorflow as tf
    from models import discriminators, generators, layers
    from trainers import gan_trainer
    from utils import losses

    spec = importlib.util.spec_from_file_location(
        "tf_checkpoint", Path(__file__).resolve().parents[2] / "hitgan/convert/tf_checkpoint.py")
    assert spec is not None and spec.loader is not None
    tf_checkpoint = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tf_checkpoint)

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    gen_cls, disc_cls = small_models(tf, generators, discriminators, layers)
    size = max(DISCRIMINATOR)
    rng = np.random.default_rng(args.seed)
    z = rng.standard_normal((BATCH, LATENT), dtype=np.float32)
    reals = rng.uniform(-1, 1, (BATCH, size, size, 3)).astype(np.float32)
    draws = {"reals": augment_draws(rng, size), "fakes": augment_draws(rng, size)}
    workdir = Path(tempfile.mkdtemp(prefix="official_step-"))
    out: dict[str, np.ndarray] = {"z": z, "reals": reals}
    for kind, d in draws.items():
        out.update({f"augment/{kind}/{k}": v for k, v in d.items()})

    def build() -> tuple[Any, Any, Any]:
        G, D, E = gen_cls(), disc_cls(), gen_cls()
        for model, x in ((G, z), (E, z), (D, reals)):
            model(tf.constant(x), training=False)
        return G, D, E

    def named(tag: str, **objects: Any) -> dict[str, np.ndarray]:
        """Variables of ``objects`` (generator=, discriminator= or ema_generator=) by reference
        name, read back from a checkpoint through hitgan's TF checkpoint reader."""
        path = tf.train.Checkpoint(**objects).write(str(workdir / tag))
        return tf_checkpoint.read_tf_checkpoint(path, ema="ema_generator" in objects)

    G, D, E = build()
    # gain 2 in D (He, for its LeakyReLUs), so that its logits and R1 are not vanishingly small
    for model, seed, gain in ((G, 1, 1.0), (D, 2, 2.0), (E, 3, 1.0)):
        randomize(model, np.random.default_rng([args.seed, seed]), gain)
    init = tf.train.Checkpoint(generator=G, discriminator=D, ema_generator=E).write(
        str(workdir / "init"))
    out.update({f"init/{k}": v for k, v in named("init-gd", generator=G, discriminator=D).items()})
    out.update({f"init_ema/{k}": v for k, v in named("init-e", ema_generator=E).items()})

    uniforms = official_uniforms(draws["reals"]) + official_uniforms(draws["fakes"])
    for record, bcr in (("plain", False), ("bcr", True)):
        G, D, E = build()
        tf.train.Checkpoint(generator=G, discriminator=D, ema_generator=E).read(
            init).assert_existing_objects_matched()
        found, grads = official_step(tf, gan_trainer, losses, (G, D, E), bcr, z, reals,
                                     uniforms if bcr else [], workdir / record)
        out.update({f"{record}/loss/{k}": np.float32(v) for k, v in found.items()})
        out.update({f"{record}/after/{k}": v
                    for k, v in named(f"{record}-after", generator=G, discriminator=D).items()})
        out.update({f"{record}/ema/{k}": v
                    for k, v in named(f"{record}-ema", ema_generator=E).items()})
        for who, model in (("generator", G), ("discriminator", D)):
            for var, grad in zip(model.trainable_variables, grads[who], strict=True):
                var.assign(grad)  # the gradients, named through a checkpoint
        # BatchNorm moving statistics are the only variables that are not trained
        held = {k: v for k, v in named(f"{record}-grads", generator=G, discriminator=D).items()
                if not k.endswith(("/moving_mean", "/moving_variance"))}
        assert len(held) == sum(map(len, grads.values())), (len(held), grads.keys())
        out.update({f"{record}/grad/{k}": v for k, v in held.items()})

    meta = {"generator_config": GENERATOR, "latent_dim": LATENT,
            "discriminator_channel_dim": {str(k): v for k, v in DISCRIMINATOR.items()},
            "blur_resample": True, "batch": BATCH, "train": SETTINGS,
            "official_commit": OFFICIAL_COMMIT, "tf": tf.__version__, "seed": args.seed}
    out["meta"] = np.array(json.dumps(meta))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(f"wrote {len(out)} arrays to {args.out} ({Path(args.out).stat().st_size / 2**20:.2f} "
          f"MiB); losses: " + ", ".join(f"{k} {float(v):.6f}" for k, v in out.items()
                                        if "/loss/" in k))


if __name__ == "__main__":
    main()
