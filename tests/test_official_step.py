"""One step of hitgan's trainer equals one step of the official trainer.

tests/data/official_step.npz holds one run of the official ``GANTrainer._train_one_step``
(hit-gan 06d310c, TF 2.21) on a small generator and discriminator: their variables before the
step, the latents, reals and DiffAugment parameters it used, and its losses, gradients, updated
variables and EMA generator, without and with bCR. tests/tools/official_step.py made it
(docs/training.md says how). Here hitgan's ``Trainer`` is built around the converted models and
makes one ``train_step`` on the same reals. Two seams feed it the official randomness: a forward
pre-hook on G swaps in the official latents, and the Trainer's DiffAugment applies the stored
parameters (with hitgan's own augmentation code) instead of drawing its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hitgan.convert.official import (
    apply_rules,
    configs_from_meta,
    convert_official,
    generator_rules,
    load_npz,
)
from hitgan.training import augment, loop, phases
from hitgan.training.config import TrainConfig

FIXTURE = Path(__file__).with_name("data") / "official_step.npz"
TOL = 1e-4  # losses, gradients, updated and EMA variables: relative to the tensor's scale
# Adam's first step is lr * g / (|g| + 1e-6): a gradient far below 1e-6 is divided by 1e-6, so
# float32 noise of 1e-8 in it moves the weight by 0.01 lr. The step is compared in units of lr.
STEP_TOL = 0.05
ZERO_GRAD = 1e-6  # below this an official gradient is rounding noise around an exact zero
EMA_STEP_TOL = 1e-3  # the EMA's own change; a wrong decay or buffer rule is off by 90% or more
AUGMENT_KEYS = {"color": ("brightness", "saturation", "contrast"),
                "translation": ("shift_y", "shift_x"), "cutout": ("cutout_y", "cutout_x")}

State = dict[str, torch.Tensor]


def scoped(variables: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in variables.items() if k.startswith(prefix)}


def states(G: torch.nn.Module, D: torch.nn.Module | None = None) -> State:
    """Floating-point state (parameters and BatchNorm statistics), keys prefixed G. and D."""
    pairs = [("G", G)] + ([("D", D)] if D is not None else [])
    return {f"{tag}.{k}": v for tag, m in pairs for k, v in m.state_dict().items()
            if v.is_floating_point()}


def official_state(variables: dict[str, np.ndarray], meta: dict) -> State:
    """Official variables in hitgan's layout, through the converter."""
    G, D = convert_official(variables, *configs_from_meta(meta))
    assert G is not None and D is not None
    return states(G, D)


def worst(ours: State, theirs: State, keys: list[str], floor: float = 0.0) -> tuple[float, str]:
    """The largest max|ours - theirs| / max(max|theirs|, floor) over ``keys``, with its key."""
    return max(((ours[k].double() - theirs[k].double()).abs().max().item()
                / max(theirs[k].abs().max().item(), floor), k) for k in keys)


@pytest.fixture(scope="module")
def official() -> tuple[dict[str, np.ndarray], dict]:
    return load_npz(FIXTURE)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Trainer needs a dataset to start; the step's reals come from the fixture."""
    folder = tmp_path_factory.mktemp("images")
    Image.new("RGB", (32, 32)).save(folder / "0.png")
    return folder


def one_step(official: tuple[dict[str, np.ndarray], dict], bcr: bool, data: Path, out: Path,
             monkeypatch: pytest.MonkeyPatch) -> tuple[loop.Trainer, dict[str, float], State]:
    """hitgan's Trainer, on the official initial variables, after one ``train_step``; returns
    it, the step's losses and the gradients its optimizers were given."""
    variables, meta = official
    s = meta["train"]
    G, D = convert_official(scoped(variables, "init/"), *configs_from_meta(meta))
    monkeypatch.setattr(loop, "HiTGenerator", lambda config: G)
    monkeypatch.setattr(loop, "StyleGANDiscriminator", lambda config: D)
    cfg = TrainConfig(data=str(data), out=str(out), batch=meta["batch"], workers=0, flip=False,
                      lr_g=s["lr_g"], lr_d=s["lr_d"], betas=(s["beta1"], s["beta2"]),
                      loss=s["loss"], penalty="r1", penalty_cost=s["r1_cost"], bcr=bcr,
                      bcr_cost=s["bcr_cost"], augment=s["augment"], ema_decay=s["ema_decay"],
                      ema_start=s["ema_start"])
    trainer = loop.Trainer(cfg, progress=False)
    assert trainer.G is G and trainer.D is D
    apply_rules(trainer.ema.model, generator_rules(trainer.ema.model),
                scoped(variables, "init_ema/"), "generator")

    z = torch.from_numpy(variables["z"])
    latents_used = []
    G.register_forward_pre_hook(lambda module, args: latents_used.append(args[0]) or (z,))
    replay = [[{k: torch.from_numpy(variables[f"augment/{kind}/{k}"]).long()
                if k.startswith(("shift", "cutout")) else
                torch.from_numpy(variables[f"augment/{kind}/{k}"])
                for k in AUGMENT_KEYS[name]} for name in cfg.augment.split(",")]
              for kind in ("reals", "fakes")]  # the official order: reals' copies, then fakes'

    def replayed(x: torch.Tensor, policy: str, gen: torch.Generator, offset: int,
                 total: int) -> torch.Tensor:
        assert policy == cfg.augment and total == cfg.batch
        return augment.apply(x, policy, replay.pop(0), slice(offset, offset + x.shape[0]))

    monkeypatch.setattr(phases, "diff_augment", replayed)
    grads: State = {}
    for tag, model, opt in (("G", G, trainer.opt_g), ("D", D, trainer.opt_d)):
        def capture(optimizer: torch.optim.Optimizer, args: object, kwargs: object,
                    tag: str = tag, model: torch.nn.Module = model) -> None:
            grads.update({f"{tag}.{k}": p.grad.clone() for k, p in model.named_parameters()})
        opt.register_step_pre_hook(capture)
    reals = torch.from_numpy(variables["reals"]).permute(0, 3, 1, 2)  # NHWC -> NCHW
    stats = trainer.train_step([reals])
    assert len(latents_used) == 1 and latents_used[0].shape == z.shape
    assert not replay if bcr else len(replay) == 2
    return trainer, stats, grads


@pytest.mark.parametrize("record", ["plain", "bcr"])
def test_one_step_equals_official(official, data_dir, record, tmp_path, monkeypatch):
    variables, meta = official
    s = meta["train"]
    trainer, stats, grads = one_step(official, record == "bcr", data_dir, tmp_path, monkeypatch)

    # losses; the official metrics include the R1 and bCR costs
    for name, ours in (("G", stats["G/loss"]), ("D", stats["D/loss"]),
                       ("D_gan", stats["D/loss_gan"]), ("r1", stats["D/r1"] * s["r1_cost"]),
                       ("bcr", stats.get("D/bcr", 0.0) * s["bcr_cost"])):
        theirs = float(variables[f"{record}/loss/{name}"])
        assert abs(ours - theirs) <= TOL * max(1.0, abs(theirs)), (name, ours, theirs)

    init = official_state(scoped(variables, "init/"), meta)
    with_init = {**scoped(variables, "init/"), **scoped(variables, f"{record}/grad/")}
    grad_ref = {k: v for k, v in official_state(with_init, meta).items() if k in grads}
    # Biases of the last stage whose every path to the loss runs through a BatchNorm (which
    # removes per-channel constants) have an exact-zero gradient; both sides give rounding noise.
    zero = [k for k in grads if grad_ref[k].abs().max() < ZERO_GRAD]
    signal = [k for k in grads if k not in zero]
    assert len(zero) <= 4, zero
    assert worst(grads, grad_ref, signal)[0] <= TOL
    assert all(grads[k].abs().max() < ZERO_GRAD for k in zero)

    after, after_ref = states(trainer.G, trainer.D), official_state(
        scoped(variables, f"{record}/after/"), meta)
    assert worst(after, after_ref, list(after), floor=1.0)[0] <= TOL
    step = {k: after[k] - init[k] for k in after}
    step_ref = {k: after_ref[k] - init[k] for k in after}
    lr = s["lr_g"]
    assert s["lr_d"] == lr
    assert worst(step, step_ref, signal, floor=1e9)[0] * 1e9 <= STEP_TOL * lr
    assert all(max(step[k].abs().max(), step_ref[k].abs().max()) <= 0.5 * lr for k in zero)
    statistics = [k for k in after if k not in grads]  # BatchNorm moving mean and variance
    assert statistics and worst(step, step_ref, statistics)[0] <= TOL

    ema, ema_init = states(trainer.ema.model), official_state(
        {**scoped(variables, "init/"), **scoped(variables, "init_ema/")}, meta)
    ema_ref = official_state({**scoped(variables, "init/"), **scoped(variables, f"{record}/ema/")},
                             meta)
    assert worst(ema, ema_ref, list(ema), floor=1.0)[0] <= TOL
    ema_step = {k: ema[k] - ema_init[k] for k in ema}
    ema_step_ref = {k: ema_ref[k] - ema_init[k] for k in ema}
    assert worst(ema_step, ema_step_ref, list(ema))[0] <= EMA_STEP_TOL
