"""bench.generator_throughput runs end to end on the tiny preset (no timing assertions)."""

import json
import sys

import pytest

from bench import generator_throughput as bench
from hitgan.models.layers import ONEDNN_FP32


def test_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rows = bench.main(["--presets", "hit-tiny-32", "--batches", "1", "--repeats", "1",
                       "--rounds", "1", "--matmul-size", "256", "--json", str(out)])
    torch_linear = [("hit-tiny-32", 1, "ours torch-linear fp32")] if ONEDNN_FP32 else []
    assert [(r.preset, r.batch, r.impl) for r in rows] == [
        ("hit-tiny-32", 1, "ours fp32"), ("hit-tiny-32", 1, "ours bf16"), *torch_linear]
    assert all(r.images_per_s > 0 and r.gflops > 0 for r in rows)
    assert rows[0].max_abs_diff is None and rows[1].max_abs_diff is not None
    printed = capsys.readouterr().out
    assert "| hit-tiny-32 | 1 | ours bf16 |" in printed
    assert "ours bf16 / ours fp32" in printed
    saved = json.loads(out.read_text())
    assert len(saved["rows"]) == len(rows) and set(saved["matmul_gflops"]) == {"fp32", "bf16"}
    assert saved["machine"]["malloc_cache"] in (True, False)
    ceilings = saved["linear_ceilings"]
    assert [c["dtype"] for c in ceilings] == ["fp32", "bf16"]
    assert all(c["gflop"] > 0 and c["gflops"] > 0 for c in ceilings)
    assert "hit-tiny-32 batch 1: fp32 " in printed and "best ours bf16 row" in printed


def test_fp32_only(capsys):
    """--precisions fp32 (for CPUs that emulate bf16) times no bf16 row or ceiling."""
    rows = bench.main(["--presets", "hit-tiny-32", "--batches", "1", "--repeats", "1",
                       "--rounds", "1", "--matmul-size", "128", "--precisions", "fp32"])
    assert [r.impl for r in rows] == ["ours fp32", *["ours torch-linear fp32"] * ONEDNN_FP32]
    printed = capsys.readouterr().out
    if ONEDNN_FP32:  # sampling's oneDNN Linear against torch's, side by side
        assert "ours fp32 / ours torch-linear fp32 = " in printed
    assert "hit-tiny-32 batch 1: fp32 " in printed and "bf16" not in printed.split("ratios")[1]


def test_linear_shapes_cover_every_linear_flop():
    """The shapes the ceiling times are all of the generator's Linear FLOPs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from hitgan.models.config import get_preset
    from hitgan.models.generator import HiTGenerator

    cfg = get_preset("hit-tiny-32").generator
    model = HiTGenerator(cfg).eval()
    shapes = bench.linear_shapes(model, torch.randn(2, cfg.latent_dim))
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert sum(shapes.values()) >= n_linear  # chunked MLPs call their Linears more than once
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.randn(2, cfg.latent_dim))
    mm = sum(v for op, v in counter.get_flop_counts()["Global"].items() if "mm" in str(op))
    assert sum(2 * r * i * o * c for (r, i, o), c in shapes.items()) == mm


@pytest.mark.parametrize("argv, message", [
    (["--official", "/nowhere"], "go together"),
    (["--official", "/nowhere", "--tf-python", sys.executable], "no models/generators.py"),
    (["--presets", "hit-huge"], "unknown"),
    (["--batches", "0"], "must be >= 1"),
    (["--freezing"], "needs --compile"),
    (["--precisions", "fp16"], "choose fp32, bf16"),
])
def test_bad_options(capsys, argv, message):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert message in capsys.readouterr().err


def test_freezing_is_on_only_inside_the_compiled_calls(freezing_seen):
    """``--compile --freezing``: inductor's freezing is on inside each compiled call (when a call
    compiles), never for the whole process."""
    import torch
    import torch._inductor.config as inductor_config

    from hitgan.models.config import get_preset
    from hitgan.models.generator import HiTGenerator

    seen = freezing_seen
    model = HiTGenerator(get_preset("hit-tiny-32").generator).eval()
    ours = bench._ours(model, torch.randn(1, model.config.latent_dim), True, True)
    with torch.inference_mode():
        for impl in ("ours compile fp32", "ours compile bf16"):
            ours[impl][0]()
    assert seen == [True, True] and inductor_config.freezing is False
    assert ours["ours compile fp32"][1] == "torch.compile (freezing)"
