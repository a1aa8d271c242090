"""Official TF (google-research/hit-gan) variables -> hitgan state dicts.

Variables are named by the path of Keras attributes that holds them, as in
the reference npz, e.g. ``generator/blocks/0/1/attention_layer/query_dense/kernel``.
Keras Dense kernels are (in, out), Conv2D kernels (kh, kw, in, out), attention kernels
(C, heads, key_dim) and (heads, key_dim, C).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hitgan.models.attention import CrossAttentionBlock, MultiAxisBlock
from hitgan.models.config import DiscriminatorConfig, GeneratorConfig
from hitgan.models.discriminator import StyleGANDiscriminator
from hitgan.models.generator import HiTGenerator
from hitgan.models.layers import BatchNormLast, MLPBlock

Transform = Callable[[np.ndarray], np.ndarray]
Rule = tuple[str, str, Transform]  # (hitgan key, official key, transform)


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _dense(a: np.ndarray) -> np.ndarray:  # (in, ...) -> (out, in)
    return a.reshape(a.shape[0], -1).T


def _dense_out(a: np.ndarray) -> np.ndarray:  # (heads, key_dim, out) -> (out, heads*key_dim)
    return a.reshape(-1, a.shape[-1]).T


def _conv(a: np.ndarray) -> np.ndarray:  # (kh, kw, in, out) -> (out, in, kh, kw)
    return a.transpose(3, 2, 0, 1)


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1)


def _norm(mod: nn.Module, ours: str, theirs: str) -> list[Rule]:
    if isinstance(mod, BatchNormLast):
        return [(f"{ours}.bn.weight", f"{theirs}/gamma", _same),
                (f"{ours}.bn.bias", f"{theirs}/beta", _same),
                (f"{ours}.bn.running_mean", f"{theirs}/moving_mean", _same),
                (f"{ours}.bn.running_var", f"{theirs}/moving_variance", _same)]
    return [(f"{ours}.weight", f"{theirs}/gamma", _same), (f"{ours}.bias", f"{theirs}/beta", _same)]


def _linear(ours: str, theirs: str, kernel: Transform = _dense, bias: bool = True) -> list[Rule]:
    rules = [(f"{ours}.weight", f"{theirs}/kernel", kernel)]
    if bias:
        rules.append((f"{ours}.bias", f"{theirs}/bias", _flat))
    return rules


def _mlp(mod: MLPBlock, ours: str, theirs: str) -> list[Rule]:
    return (_norm(mod.norm, f"{ours}.norm", f"{theirs}/norm_layer")
            + _linear(f"{ours}.fc1", f"{theirs}/mlp_block/0")
            + _linear(f"{ours}.fc2", f"{theirs}/mlp_block/2"))


def _attention_block(mod: CrossAttentionBlock | MultiAxisBlock, ours: str, theirs: str
                     ) -> list[Rule]:
    att = f"{theirs}/attention_layer"
    return (_norm(mod.norm, f"{ours}.norm", f"{theirs}/norm")
            + _linear(f"{ours}.attn.to_q", f"{att}/query_dense")
            + [(f"{ours}.attn.to_kv.weight", f"{att}/key_dense/kernel|{att}/value_dense/kernel",
                _dense),
               (f"{ours}.attn.to_kv.bias", f"{att}/key_dense/bias|{att}/value_dense/bias", _flat)]
            + _linear(f"{ours}.attn.to_out", f"{att}/output_dense", _dense_out)
            + _mlp(mod.mlp, f"{ours}.mlp", f"{theirs}/mlp_block"))


def generator_rules(model: HiTGenerator, prefix: str = "generator") -> list[Rule]:
    p = prefix
    rules = (_linear("to_grid", f"{p}/dense_layer/0")
             + _linear("to_tokens", f"{p}/embedding_layer/0")
             + [("token_pos.weight", f"{p}/embedding_layer/2/embedding_weight",
                 lambda a: a.reshape(1, a.shape[-2], a.shape[-1]))]
             + _norm(model.token_norm, "token_norm", f"{p}/embedding_layer/3"))
    for i, stage in enumerate(model.stages):
        s = f"stages.{i}"
        rules.append((f"{s}.pos_embed.weight", f"{p}/position_embeddings/{i}/embedding_weight",
                      _same))
        rules += _attention_block(stage.cross, f"{s}.cross", f"{p}/blocks/{i}/0")
        for j, block in enumerate(stage.blocks):
            theirs = f"{p}/blocks/{i}/{j + 1}"
            rules += (_mlp(block, f"{s}.blocks.{j}", theirs) if isinstance(block, MLPBlock)
                      else _attention_block(block, f"{s}.blocks.{j}", theirs))
        if stage.to_rgb is not None:
            rgb = f"{p}/to_rgb_layers/{i}/output_layer"
            rules += (_norm(stage.to_rgb.norm, f"{s}.to_rgb.norm", f"{rgb}/0")
                      + _linear(f"{s}.to_rgb.proj", f"{rgb}/1"))
    for i, up in enumerate(model.upsamples):
        if isinstance(up.proj, nn.Linear):
            rules += _linear(f"upsamples.{i}.proj", f"{p}/umsamplings/{i}/dense_layer")
    return rules


def _flatten_nhwc(a: np.ndarray) -> np.ndarray:
    """Dense kernel after the official NHWC Flatten of (4, 4, C) -> torch (out, C*4*4)."""
    c = a.shape[0] // 16
    return a.reshape(4, 4, c, -1).transpose(3, 2, 0, 1).reshape(a.shape[1], -1)


def discriminator_rules(model: StyleGANDiscriminator, prefix: str = "discriminator"
                        ) -> list[Rule]:
    p = prefix
    rules = _linear("stem", f"{p}/conv_blocks/0", _conv)
    for k in range(len(model.blocks)):  # conv_blocks: 0 conv, 1 LeakyReLU, 2.. residual blocks
        b, theirs = f"blocks.{k}", f"{p}/conv_blocks/{k + 2}"
        rules += (_linear(f"{b}.conv1", f"{theirs}/conv_layers/0", _conv)
                  + _linear(f"{b}.conv2", f"{theirs}/conv_layers/3", _conv)
                  + _linear(f"{b}.skip", f"{theirs}/skip_layers/1", _conv, bias=False))
    return (rules + _linear("final_conv", f"{p}/final_layers/0", _conv)
            + _linear("fc", f"{p}/final_layers/3", _flatten_nhwc)
            + _linear("out", f"{p}/final_layers/5"))


def apply_rules(model: nn.Module, rules: list[Rule], variables: Mapping[str, np.ndarray],
                prefix: str) -> set[str]:
    """Fill ``model`` from ``variables``; returns the official keys it used.

    Raises ValueError naming the variable when one is missing or has the wrong shape, and when a
    variable under ``prefix`` is left over (the config does not describe those weights).
    """
    own = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for ours, theirs, fn in rules:
        keys = theirs.split("|")
        missing = [k for k in keys if k not in variables]
        if missing:
            raise ValueError(f"official variable {missing[0]} not found (needed for {ours}); "
                             "the config does not match these weights")
        parts = [fn(np.asarray(variables[k], dtype=np.float32)) for k in keys]
        value = torch.from_numpy(np.ascontiguousarray(np.concatenate(parts, axis=0)))
        if value.shape != own[ours].shape:
            raise ValueError(f"official {theirs} gives {ours} shape {tuple(value.shape)}, the "
                             f"config needs {tuple(own[ours].shape)}")
        new[ours] = value
        used.update(keys)
    left = sorted(k for k in variables if k.startswith(prefix + "/") and k not in used)
    if left:
        raise ValueError(f"{len(left)} official variable(s) not used, e.g. {left[0]}; the config "
                         "does not match these weights")
    untouched = [k for k in own if k not in new and not k.endswith("num_batches_tracked")]
    assert not untouched, f"converter rules do not cover {untouched[:3]}"
    model.load_state_dict(new, strict=False)
    return used


def configs_from_meta(meta: Mapping) -> tuple[GeneratorConfig, DiscriminatorConfig]:
    """Configs from the ``meta`` JSON of a reference npz (official argument names)."""
    g = meta["generator_config"]
    n = len(g["channel_dim_per_block"])
    gen = GeneratorConfig(
        resolution=8 * 2 ** (n - 1), latent_dim=int(meta["latent_dim"]),
        layers=g["num_layers_per_block"], widths=g["channel_dim_per_block"],
        heads=g["num_heads_per_block"], patch_sizes=g["patch_size_per_block"],
        attention=g.get("attn_type", "multi_query"), norm=g.get("norm_type", "batch"))
    table = {int(k): int(v) for k, v in meta["discriminator_channel_dim"].items()}
    res = max(table)
    disc = DiscriminatorConfig(resolution=res,
                               channels=tuple(table[res >> i] for i in range(len(table))),
                               blur_resample=bool(meta.get("blur_resample", True)))
    return gen, disc


def load_npz(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Variables and meta (empty when absent) of an official-variables npz. No pickles."""
    try:
        with np.load(path, allow_pickle=False) as data:
            variables = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read as an npz of official variables ({e})") from e
    meta_raw = variables.pop("meta", None)
    return variables, (json.loads(str(meta_raw)) if meta_raw is not None else {})


def convert_official(variables: Mapping[str, np.ndarray], gen_cfg: GeneratorConfig | None,
                     disc_cfg: DiscriminatorConfig | None
                     ) -> tuple[HiTGenerator | None, StyleGANDiscriminator | None]:
    """Build hitgan models and fill them with the official variables (either may be None)."""
    gen = disc = None
    if gen_cfg is not None:
        gen = HiTGenerator(gen_cfg)
        apply_rules(gen, generator_rules(gen), variables, "generator")
    if disc_cfg is not None:
        disc = StyleGANDiscriminator(disc_cfg)
        apply_rules(disc, discriminator_rules(disc), variables, "discriminator")
    return gen, disc


def check_against_outputs(variables: Mapping[str, np.ndarray], gen: HiTGenerator | None,
                          disc: StyleGANDiscriminator | None) -> dict[str, float]:
    """Max abs difference to the official outputs stored beside the variables (reference npz:
    ``z``, ``generator_output_eval|train`` NHWC, ``discriminator_input``/``_logits``)."""
    diffs: dict[str, float] = {}
    with torch.no_grad():
        if gen is not None and "z" in variables:
            z = torch.from_numpy(np.asarray(variables["z"], dtype=np.float32))
            for mode in ("eval", "train"):
                key = f"generator_output_{mode}"
                if key in variables:  # a copy: a train-mode pass updates BatchNorm statistics
                    out = copy.deepcopy(gen).train(mode == "train")(z).permute(0, 2, 3, 1)
                    diffs[key] = float(np.abs(out.numpy() - variables[key]).max())
        if disc is not None and "discriminator_input" in variables:
            x = torch.from_numpy(np.asarray(variables["discriminator_input"], np.float32))
            logits = disc(x.permute(0, 3, 1, 2)).numpy()
            diffs["discriminator_logits"] = float(
                np.abs(logits - variables["discriminator_logits"]).max())
    return diffs
