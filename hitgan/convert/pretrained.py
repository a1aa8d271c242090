"""Official weights on disk -> hitgan ``save_pretrained`` directories (``hitgan convert-official``).

The source is an npz of official variables (``load_npz``; a reference npz also holds ``meta``,
the model's official arguments, and outputs to check against) or a TF checkpoint directory
(``read_tf_checkpoint``, the optional tf extra). A preset gives the layout where no meta does.
"""

from __future__ import annotations

from pathlib import Path

from hitgan.convert.official import (
    check_against_outputs,
    configs_from_meta,
    convert_official,
    load_npz,
)
from hitgan.models.config import PRESETS, get_preset
from hitgan.models.io import save_pretrained


def convert_to_pretrained(src: str | Path, out: str | Path, preset: str | None = None,
                          ema: bool = False) -> tuple[dict[str, float], list[Path]]:
    """Convert ``src`` into ``out/generator`` and, when it holds one, ``out/discriminator``.
    ``ema``: a TF checkpoint's EMA generator. Returns the max abs differences to the official
    outputs stored beside the variables (none for a checkpoint) and the directories written."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise ValueError(f"{src}: no such file or directory")
    if src.is_dir():
        from hitgan.convert.tf_checkpoint import read_tf_checkpoint

        variables, meta = read_tf_checkpoint(str(src), ema=ema), {}
    else:
        variables, meta = load_npz(src)
    if preset:
        gen_cfg, disc_cfg = get_preset(preset).generator, get_preset(preset).discriminator
    elif meta:
        gen_cfg, disc_cfg = configs_from_meta(meta)
    else:
        raise ValueError(f"{src}: has no meta describing the model; pass --preset "
                         f"(official layouts: {', '.join(p for p in PRESETS if '-b-' in p)})")
    has_disc = any(k.startswith("discriminator/") for k in variables)
    gen, disc = convert_official(variables, gen_cfg, disc_cfg if has_disc else None)
    checks = check_against_outputs(variables, gen, disc)
    written = [save_pretrained(gen, out / "generator")]
    if disc is not None:
        written.append(save_pretrained(disc, out / "discriminator"))
    return checks, written
