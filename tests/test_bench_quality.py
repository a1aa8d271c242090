"""bench.quality at toy size: compare.py (a hitgan variant and the DCGAN baseline trained for a
few seconds each, FID of their snapshots, the table, JSON and plot; one snapshot each: every FID
costs two 2048x2048 eigendecompositions, seconds on a 2-core CPU), the suite end to end on the
built-in digits, and the suite's data sets built small."""

import importlib.util
import json
import re
import shlex
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from test_metrics import visible_generator

from bench.common import ROOT
from bench.quality import __main__ as suite
from bench.quality import compare, data, legible, subset
from bench.quality.baseline import BaselineConfig, DCGANDiscriminator, DCGANGenerator
from hitgan.models.io import save_pretrained


def test_parse_variant():
    assert compare.parse_variant("fast:penalty_every=16,d_width=0.5,loss=rpgan") == (
        "fast", {"penalty_every": 16, "d_width": 0.5, "loss": "rpgan"})
    assert compare.parse_variant("auto:") == ("auto", {})  # the default recipe, named
    with pytest.raises(ValueError, match="OPT=VALUE"):
        compare.parse_variant("fast:penalty_every")
    with pytest.raises(ValueError, match="name"):
        compare.parse_variant(":lr_g=1")


def test_which_runs(capsys):
    assert [n for n, _ in compare.parse_args([]).variants] == ["hitgan"]
    assert compare.parse_args(["--baseline-only"]).variants == []
    for clash in (["--no-baseline"], ["--variant", "x:batch=8"]):
        with pytest.raises(SystemExit):
            compare.parse_args(["--baseline-only", *clash])
        assert "--baseline-only trains the baseline alone" in capsys.readouterr().err


@pytest.mark.parametrize("resolution", [32, 64])
def test_baseline_shapes(resolution):
    cfg = BaselineConfig(resolution=resolution)
    images = DCGANGenerator(cfg)(torch.randn(2, cfg.latent_dim))
    assert images.shape == (2, 3, resolution, resolution) and images.abs().max() <= 1
    assert DCGANDiscriminator(cfg)(images).shape == (2, 1)


@pytest.mark.slow
def test_smoke(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(16):
        arr = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(i)) * 255
        Image.fromarray(arr.to(torch.uint8).numpy()).save(data / f"{i}.png")
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    runs = compare.main(["--data", str(data), "--minutes", "0.03", "--points", "1",
                         "--clock", "cpu", "--threads", "1",
                         "--fid-samples", "4", "--cache-dir",
                         str(tmp_path / "cache"), "--out", str(out),
                         "--variant", "fast:penalty_every=4,d_width=0.5,batch=4,ema_decay=0.999,"
                         "ema_start=0", "--score-g"])
    assert [r.name for r in runs] == ["fast", "fast (G)", compare.BASELINE]
    ema, raw = runs[0].points[0], runs[1].points[0]  # one run, scored twice
    assert ema["step"] == raw["step"] and ema["fid"] != raw["fid"]
    for run in runs:
        assert run.steps >= 1 and [p["samples"] for p in run.points] == [4]
        assert all(p["fid"] > 0 for p in run.points)
        assert 0 <= run.points[-1]["precision"] <= 1 and 0 <= run.points[-1]["recall"] <= 1
    assert runs[0].options["d_width"] == 0.5
    stem = "quality-data-hit-tiny-32-0.03min"
    record = json.loads((out / f"{stem}.json").read_text())
    assert [r["name"] for r in record["runs"]] == ["fast", "fast (G)", compare.BASELINE]
    assert (out / f"{stem}.png").stat().st_size > 0
    for name in ("fast", "fast-G", "baseline"):  # each run's last samples, 8 x 8 tiles of 32 px
        assert Image.open(out / f"{stem}-{name}.png").size == (8 * 34 - 2, 8 * 34 - 2)
    printed = capsys.readouterr().out
    assert "FID-4 after 0.03 min: fast" in printed and "(CPU time / threads, 1 thread)" in printed
    assert torch.get_num_threads() == threads  # restored for scoring and after


@pytest.mark.slow
def test_suite_end_to_end(tmp_path, capsys):
    """Both runs on the built-in digits at once, scored against a cached reference subset
    (about 45 s on 2 cores: each process computes an FID, two 2048x2048 eigendecompositions,
    on one thread)."""
    out, data_dir = tmp_path / "out", tmp_path / "suite"
    record = suite.main(["--sets", "digits", "--minutes", "0.02", "--fid-samples", "16",
                         "--reference-images", "16", "--points", "1", "--curve-samples", "16",
                         "--data-dir", str(data_dir), "--out", str(out)])
    text = (out / "suite.json").read_text()
    assert json.loads(text) == json.loads(json.dumps(record))
    assert str(tmp_path) not in text and str(ROOT) not in text  # no machine paths
    (row,) = record["sets"]
    assert (row["set"], row["kind"], row["images"], row["px"], row["preset"]) == (
        "digits", "grey", 5000, 32, "hit-tiny-32")
    (seed,) = row["seeds"]
    for kind in ("hitgan", "baseline"):
        run = seed[kind]
        assert run["steps"] >= 1 and run["fid"] > 0 and run["samples"] == 16
        assert 0 <= run["precision"] <= 1 and 0 <= run["recall"] <= 1
        assert Image.open(out / run["grid"]).size == (8 * 34 - 2, 8 * 34 - 2)
    assert row["ratio"] == pytest.approx(seed["hitgan"]["fid"] / seed["baseline"]["fid"])
    assert record["geomean_ratio_32px"] == pytest.approx(row["ratio"])
    assert row["reference"]["images"] == 16 and row["reference"]["data"] == "mnist"
    assert (data_dir / row["reference"]["file"]).exists()  # cached beside the data
    table = (out / "suite.md").read_text()
    assert f"| {row['ratio']:.3f} |" in table and "hitgan P / R" in table
    assert (out / "suite.png").stat().st_size > 0
    printed = capsys.readouterr()
    assert "[digits seed 0 hitgan]" in printed.err and "[digits seed 0 baseline]" in printed.err
    assert f"ratios at 32 px (digits): {row['ratio']:.3f}" in printed.out
    # docs/training.md's --merge of two seeds' suites: here the same runs filed as seed 1 too
    other = tmp_path / "seed1"
    other.mkdir()
    for kind in ("hitgan", "baseline"):
        seed[kind]["grid"] = f"suite-digits-seed1-{kind}.png"
        (other / seed[kind]["grid"]).write_bytes((out / f"suite-digits-seed0-{kind}.png")
                                                 .read_bytes())
    (other / "suite.json").write_text(json.dumps({**record, "sets": [
        {**row, "seeds": [{**seed, "seed": 1}]}]}))
    merged = suite.main(["--merge", str(out / "suite.json"), str(other / "suite.json"),
                         "--out", str(tmp_path / "docs")])
    (both,) = merged["sets"]
    assert [s["seed"] for s in both["seeds"]] == [0, 1] and both["ratio"] == pytest.approx(
        row["ratio"])
    assert (tmp_path / "docs" / "suite-digits-seed1-hitgan.png").exists()


def test_suite_means_ratios_and_geometric_mean_by_hand():
    rows = [{"px": 32, "ratio": 0.25}, {"px": 32, "ratio": 1.0}, {"px": 64, "ratio": 9.0},
            {"px": 32, "ratio": 0.5}]
    assert suite.geomean_32px(rows) == pytest.approx(0.5)  # (0.25 * 1 * 0.5) ** (1/3)
    assert suite.geomean_32px(rows[2:3]) is None
    seeds = [{"hitgan": {"fid": 10.0, "precision": 0.5, "recall": 0.25, "steps": 100},
              "baseline": {"fid": 20.0, "precision": 0.75, "recall": 0.5, "steps": 300},
              "ratio": 0.5},
             {"hitgan": {"fid": 30.0, "precision": 0.25, "recall": 0.75, "steps": 120},
              "baseline": {"fid": 20.0, "precision": 0.25, "recall": 0.5, "steps": 310},
              "ratio": 1.5}]
    summary = suite.summarise(seeds)
    assert summary["hitgan"] == {"fid": 20.0, "precision": 0.375, "recall": 0.5, "steps": 110}
    assert summary["ratio"] == 1.0  # of the mean FIDs
    row = {"set": "s", "kind": "grey", "images": 5000, "px": 32, "preset": "hit-tiny-32",
           "minutes": 1, "reference": {"images": 5000}, **summary, "seeds": seeds}
    assert "| 20.00 (10.00, 30.00) | 20.00 (20.00, 20.00) | 1.000 (0.500, 1.500) |" in \
        suite.table([row])


def test_suite_options_are_checked(capsys):
    for argv, message in ((["--sets", "digits,cifar"], "unknown ['cifar']"),
                          (["--minutes-64", "0"], "--minutes-64 0.0: must be > 0"),
                          (["--fid-samples", "3"], "--fid-samples 3: at least 4"),
                          (["--seeds", "0,x"], "--seeds")):
        with pytest.raises(SystemExit):
            suite.parse_args(argv)
        assert message in capsys.readouterr().err
    documented = suite.parse_args(shlex.split(  # docs/training.md's 64 px seed 1
        "--sets photos-colour-64 --minutes-64 20 --seeds 1 --fid-samples 2000 "
        "--reference-images 2000"))
    assert (documented.sets, documented.minutes_64, documented.seeds) == (
        ["photos-colour-64"], 20, [1])
    args = suite.parse_args(["--minutes", "5", "--minutes-64", "9"])
    assert args.sets == ["digits", "digits-60k", "photos-colour-32", "photos-colour-64"]
    assert (args.minutes, args.minutes_64, args.seeds) == (5, 9, [0])


def test_data_sets_build_small_and_reproducibly(tmp_path):
    assert data.source("digits", tmp_path) == "mnist"  # built in: nothing to build
    digits = data.build(data.SETS["digits-60k"], tmp_path / "a", progress=False, limit=12)
    again = data.build(data.SETS["digits-60k"], tmp_path / "b", progress=False, limit=12)
    with zipfile.ZipFile(digits) as z, zipfile.ZipFile(again) as z2:
        assert len(z.namelist()) == 12 and json.loads(z.comment)["limit"] == 12
        assert all(z.read(n) == z2.read(n) for n in z.namelist())  # fixed seeds
        img = np.asarray(Image.open(z.open(z.namelist()[0])))
    assert img.shape == (32, 32, 3) and (img[..., 0] == img[..., 2]).all()  # grey, as RGB
    mtime = digits.stat().st_mtime_ns
    assert data.build(data.SETS["digits-60k"], tmp_path / "a", limit=12) == digits
    assert digits.stat().st_mtime_ns == mtime  # the same record: kept
    assert data.SETS["digits-60k"].images == 60_000 and data.SETS["digits-60k"].grey


@pytest.mark.skipif(importlib.util.find_spec("skimage") is None,
                    reason="the photo sets read scikit-image's photographs")
def test_documented_build_of_several_sets(tmp_path, monkeypatch, capsys):
    """docs/training.md's command, each --only set built into data/suite (here 4 images)."""
    monkeypatch.chdir(tmp_path)
    data.main(["--only", "digits-60k", "--only", "photos-colour-32", "--only", "photos-grey-32",
               "--limit", "4"])
    built = sorted(p.name for p in (tmp_path / "data" / "suite").glob("*.zip"))
    assert built == ["digits-60k.zip", "photos-colour-32.zip", "photos-grey-32.zip"]
    assert len(capsys.readouterr().out.splitlines()) == 3


@pytest.mark.skipif(importlib.util.find_spec("skimage") is None,
                    reason="the photo sets read scikit-image's photographs")
def test_photo_sets_build_small(tmp_path):
    photos = data.build(data.SETS["photos-colour-64"], tmp_path, progress=False, limit=3)
    with zipfile.ZipFile(photos) as z:
        assert len(z.namelist()) == 3
        img = np.asarray(Image.open(z.open(z.namelist()[0])))
    assert img.shape == (64, 64, 3) and (img[..., 0] != img[..., 2]).any()  # colour


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("skimage") is None,
                    reason="the photo sets read scikit-image's photographs")
def test_documented_64px_commands(tmp_path, monkeypatch):
    """docs/training.md's 64 px commands as written, at toy size: the set (8 images), its
    reference statistics, hit-small-64 and then the baseline at 64 px."""
    from hitgan.cli import main as hitgan

    monkeypatch.chdir(tmp_path)
    data.main(["--only", "photos-colour-64", "--limit", "8"])
    assert hitgan(["stats", "data/suite/photos-colour-64.zip", "--out", "ref64.npz",
                   "--resolution", "64", "--max-images", "8"]) == 0
    common = ["--data", "data/suite/photos-colour-64.zip", "--preset", "hit-small-64",
              "--minutes", "0.01", "--clock", "cpu", "--threads", "1", "--points", "1",
              "--fid-samples", "4", "--reference", "ref64.npz", "--seed", "0"]
    (hit,) = compare.main([*common, "--no-baseline", "--out", "hit"])
    (base,) = compare.main([*common, "--baseline-only", "--out", "base"])
    assert (hit.name, base.name) == ("hitgan", compare.BASELINE)
    assert hit.options["preset"] == "hit-small-64" and hit.options["upsample"] == "bilinear"
    for run, out in ((hit, "hit"), (base, "base")):
        assert run.steps >= 1 and run.points[-1]["samples"] == 4 and run.points[-1]["fid"] > 0
        (grid,) = (tmp_path / out).glob(f"*-{'hitgan' if run is hit else 'baseline'}.png")
        assert Image.open(grid).size == (8 * 66 - 2, 8 * 66 - 2)  # 8 x 8 tiles of 64 px


def _toy_colour_set(images: int) -> None:
    """docs/training.md's first two commands of a photos-colour-32 experiment, at toy size, in
    the current folder: SUITE/photos-colour-32.zip (``images`` crops) and REF.npz."""
    from hitgan.cli import main as hitgan

    data.main(["--out", "SUITE", "--only", "photos-colour-32", "--limit", str(images)])
    assert hitgan(["stats", "SUITE/photos-colour-32.zip", "-o", "REF.npz", "--resolution", "32",
                   "--max-images", "5000"]) == 0


def _compare_toy(data_zip: str, seed: str, *extra: str) -> list:
    """The documented compare command at toy size (seconds, 4 samples)."""
    return compare.main([
        "--data", data_zip, "--reference", "REF.npz", "--minutes", "0.005",
        "--clock", "cpu", "--threads", "1", "--points", "1", "--fid-samples", "4",
        "--no-baseline", "--seed", seed, "--out", "OUT", *extra])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("skimage") is None,
                    reason="the photo sets read scikit-image's photographs")
def test_documented_ablation_commands(tmp_path, monkeypatch):
    """docs/training.md's leave-one-out commands as written, at toy size (8 images, seconds):
    every variant trains with its one option changed, and each is scored with its G too."""
    monkeypatch.chdir(tmp_path)
    _toy_colour_set(8)
    runs = _compare_toy(
        "SUITE/photos-colour-32.zip", "1", "--score-g", "--variant", "auto:",
        "--variant", "r1-every-step:penalty_every=1",
        "--variant", "init-official:output_init=official", "--variant", "batchnorm:norm=batch",
        "--variant", "batch-32:batch=32", "--variant", "d-width-0.25:d_width=0.25")
    names = ["auto", "r1-every-step", "init-official", "batchnorm", "batch-32", "d-width-0.25"]
    assert [r.name for r in runs] == [x for n in names for x in (n, f"{n} (G)")]
    by = {r.name: r.options for r in runs}
    assert (by["auto"]["penalty_every"], by["r1-every-step"]["penalty_every"]) == (16, 1)
    assert (by["auto"]["output_init"], by["init-official"]["output_init"]) == ("data", "official")
    assert (by["auto"]["norm"], by["batchnorm"]["norm"]) == ("layer", "batch")
    assert (by["auto"]["batch"], by["batch-32"]["batch"]) == (16, 32)
    assert (by["auto"]["d_width"], by["d-width-0.25"]["d_width"]) == (0.5, 0.25)
    assert all(r.steps >= 1 and r.points[-1]["fid"] > 0 for r in runs)


def test_subset_draws_the_same_files_byte_for_byte(tmp_path, capsys):
    source = tmp_path / "set.zip"
    with zipfile.ZipFile(source, "w") as z:
        for i in range(6):
            z.writestr(f"{i:06d}.png", bytes([i]) * 10)
    subset.main([str(source), str(tmp_path / "a.zip"), "--images", "3", "--seed", "1"])
    subset.main([str(source), str(tmp_path / "b.zip"), "--images", "3", "--seed", "1"])
    assert "3 images of" in capsys.readouterr().out
    with zipfile.ZipFile(tmp_path / "a.zip") as a, zipfile.ZipFile(tmp_path / "b.zip") as b:
        assert a.namelist() == b.namelist() and len(set(a.namelist())) == 3
        assert all(a.read(n) == bytes([int(n[:6])]) * 10 for n in a.namelist())
    for argv, message in (([str(source), str(tmp_path / "c.zip"), "--images", "7"],
                           "--images 7: .*set.zip has 6 files; draw 1 to 6"),
                          ([str(source), str(source), "--images", "2"], "replace its source"),
                          ([str(tmp_path / "none.zip"), str(tmp_path / "d.zip"), "--images",
                            "2"], "none.zip")):
        with pytest.raises(SystemExit):
            subset.main(argv)
        assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "c.zip").exists() and not (tmp_path / "d.zip").exists()
    with zipfile.ZipFile(source) as z:
        assert len(z.namelist()) == 6  # the source untouched


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("skimage") is None,
                    reason="the photo sets read scikit-image's photographs")
def test_documented_small_set_commands(tmp_path, monkeypatch):
    """docs/training.md's adaptive-augmentation commands as written, at toy size: a subset of
    a suite set, then the auto recipe (ADA on: fewer than 5,000 images) beside it without."""
    monkeypatch.chdir(tmp_path)
    _toy_colour_set(12)
    subset.main(["SUITE/photos-colour-32.zip", "colour100.zip", "--images", "8", "--seed", "1"])
    runs = _compare_toy("colour100.zip", "0", "--variant", "auto:",
                        "--variant", "no-ada:ada_target=null")
    assert [(r.name, r.options["ada_target"]) for r in runs] == [("auto", 0.6), ("no-ada", None)]
    assert all(r.steps >= 1 and r.points[-1]["fid"] > 0 for r in runs)


def test_legible_fraction_and_class_shares_by_hand():
    conf = torch.tensor([0.95, 0.5, 0.99, 0.91])
    classes = torch.tensor([1, 2, 1, 3])
    summary = legible.legible_summary(conf, classes, 0.9, 4)
    assert summary["legible"] == 0.75  # 0.5 is below the threshold
    assert summary["class_shares"] == pytest.approx([0, 2 / 3, 0, 1 / 3])
    assert legible.legible_summary(conf, classes, 0.999, 4) == {"legible": 0.0,
                                                                "class_shares": [0.0] * 4}


def test_legible_scores_an_unconditional_run_and_refuses_a_conditional_one(tmp_path, capsys):
    model = str(save_pretrained(visible_generator(), tmp_path / "g"))
    argv = ["--run", model, "--samples", "8", "--epochs", "1", "--max-images", "200",
            "--json", str(tmp_path / "legible.json")]
    result = legible.main(argv)
    assert result["samples"] == 8 and result["classifier"]["test_images"] == 40
    for part in ("generated", "real_test"):
        assert 0 <= result[part]["legible"] <= 1 and len(result[part]["class_shares"]) == 10
    saved = json.loads((tmp_path / "legible.json").read_text())
    assert saved["generated"] == result["generated"]
    assert legible.main(argv)["generated"] == result["generated"]  # deterministic
    assert "legible (one class at probability >= 0.9): generated" in capsys.readouterr().out
    conditional = str(save_pretrained(visible_generator(num_classes=10), tmp_path / "c"))
    with pytest.raises(SystemExit, match="class-conditional"):
        legible.main(["--run", conditional, "--samples", "2"])


def _suite_file(folder, seeds, minutes=20, commit="abc1234", reference=None):
    """A suite.json as bench.quality writes it (digits, the given seeds) and its grids."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed, (fid_h, fid_b) in seeds.items():
        entry = {"seed": seed, "ratio": fid_h / fid_b}
        for kind, fid in (("hitgan", fid_h), ("baseline", fid_b)):
            grid = f"suite-digits-seed{seed}-{kind}.png"
            Image.new("L", (4, 4), seed).save(folder / grid)
            entry[kind] = {"fid": fid, "precision": 0.5, "recall": 0.25, "samples": 16,
                           "steps": 100 + seed, "images": 1600, "minutes": minutes,
                           "grid": grid, "curve": [[minutes, fid]]}
        runs.append(entry)
    row = {"set": "digits", "kind": "grey", "images": 5000, "px": 32, "preset": "hit-tiny-32",
           "minutes": minutes,
           "reference": reference or {"file": "mnist.npz", "images": 16, "data": "mnist"},
           **suite.summarise(runs), "seeds": runs}
    machine = {"hitgan": commit, "cpu": "Test CPU", "cpus": 2, "torch": "2", "torch_threads": 2,
               "python": "3.11", "device": "cpu", "env": {}, "malloc_cache": True}
    options = {"minutes": minutes, "minutes_64": 40, "seeds": list(seeds), "fid_samples": 16,
               "reference_images": 16, "points": 1, "curve_samples": 16, "clock": "CPU time"}
    path = folder / "suite.json"
    path.write_text(json.dumps({"machine": machine, "options": options, "sets": [row],
                                "geomean_ratio_32px": row["ratio"]}))
    return path


def test_merge_joins_suites_run_apart(tmp_path, capsys):
    first = _suite_file(tmp_path / "a", {0: (10.0, 20.0)}, commit="aaaaaaa")
    # run elsewhere: its statistics file has another cached name, and it predates fingerprints
    second = _suite_file(tmp_path / "b", {1: (30.0, 20.0)}, commit="bbbbbbb",
                         reference={"file": "mnist-32px-0123.npz", "images": 16})
    out = tmp_path / "out"
    record = suite.main(["--merge", str(first), str(second), "--out", str(out)])
    (row,) = record["sets"]
    assert [s["seed"] for s in row["seeds"]] == [0, 1] and record["options"]["seeds"] == [0, 1]
    assert row["hitgan"]["fid"] == 20.0 and row["ratio"] == 1.0  # the mean FIDs' ratio
    assert record["geomean_ratio_32px"] == 1.0
    table = (out / "suite.md").read_text()
    assert "| 20.00 (10.00, 30.00) | 20.00 (20.00, 20.00) | 1.000 (0.500, 1.500) |" in table
    assert "- digits seed 0: hitgan aaaaaaa" in table and "- digits seed 1: hitgan bbbbbbb" in table
    for seed in (0, 1):  # each run's grid copied beside the merged table
        assert Image.open(out / f"suite-digits-seed{seed}-hitgan.png").getpixel((0, 0)) == seed
    assert json.loads((out / "suite.json").read_text()) == json.loads(json.dumps(record))
    assert str(tmp_path) not in (out / "suite.json").read_text()
    # a merged suite merges again, in place, keeping who ran what
    third = _suite_file(tmp_path / "c", {2: (20.0, 20.0)}, commit="ccccccc")
    again = suite.main(["--merge", str(out / "suite.json"), str(third), "--out", str(out)])
    assert [m["hitgan"] for m in again["machine"]] == ["aaaaaaa", "bbbbbbb", "ccccccc"]
    assert again["sets"][0]["hitgan"]["fid"] == 20.0 and len(again["sets"][0]["seeds"]) == 3
    capsys.readouterr()


def test_merge_refuses_what_does_not_belong_together(tmp_path, capsys):
    first = _suite_file(tmp_path / "a", {0: (10.0, 20.0)})
    for other, message in ((_suite_file(tmp_path / "b", {0: (30.0, 20.0)}),
                            "set digits seed 0 is in an earlier file too"),
                           (_suite_file(tmp_path / "c", {1: (30.0, 20.0)}, minutes=5),
                            "option minutes = 5, but 20"),
                           (_suite_file(tmp_path / "e", {1: (30.0, 20.0)}, reference={
                               "file": "mnist.npz", "images": 16, "data": "sha256:00"}),
                            "set digits has reference"),
                           (_suite_file(tmp_path / "f", {1: (30.0, 20.0)}, reference={
                               "file": "mnist.npz", "images": 32}),
                            "set digits has reference"),
                           (tmp_path / "missing.json", "not a suite.json"),
                           (_suite_file(tmp_path / "d", {2: (30.0, 20.0)}), "grid")):
        if other.parent.name == "d":  # its grids left behind
            (other.parent / "suite-digits-seed2-baseline.png").unlink()
        with pytest.raises(SystemExit, match=message) as e:
            suite.main(["--merge", str(first), str(other), "--out", str(tmp_path / "out")])
        assert str(other) in str(e.value)
    assert not (tmp_path / "out" / "suite.json").exists()


def test_fingerprint_names_the_pixels_not_the_zip(tmp_path, monkeypatch):
    """Two builds of a set written at other times (other zip bytes) have one fingerprint; other
    images have another; a built-in set is its name."""
    first = data.build(data.SETS["digits-60k"], tmp_path / "a", progress=False, limit=6)
    monkeypatch.setattr(zipfile.time, "time", lambda: 86_400.0 * 365 * 20)  # written in 1990
    second = data.build(data.SETS["digits-60k"], tmp_path / "b", progress=False, limit=6)
    assert first.read_bytes() != second.read_bytes()
    assert data.fingerprint(str(first)) == data.fingerprint(str(second))
    assert data.fingerprint(str(first)).startswith("sha256:")
    fewer = data.build(data.SETS["digits-60k"], tmp_path / "c", progress=False, limit=5)
    assert data.fingerprint(str(fewer)) != data.fingerprint(str(first))
    assert data.fingerprint("mnist") == "mnist"
