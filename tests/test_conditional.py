"""Class-conditional HiT: labels from folders and dataset.json (and their errors), conditional G
and D forward/backward, num_classes=0 unchanged, save/load with classes, training with labels,
`hitgan generate --class`, `hitgan eval --per-class`, and scripts/conditional.sh at toy size."""

import dataclasses
import json
import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.quality import conditional
from hitgan.cli import main, parse_classes
from hitgan.data.dataset import DatasetError, ImageDataset, Labelled, Preprocess
from hitgan.data.tool import make_dataset_zip
from hitgan.metrics import classifier
from hitgan.models.config import DiscriminatorConfig, GeneratorConfig, get_preset
from hitgan.models.discriminator import StyleGANDiscriminator
from hitgan.models.generator import HiTGenerator
from hitgan.models.io import from_pretrained, save_pretrained
from hitgan.training.checkpoint import load_generator
from hitgan.training.config import TrainConfig
from hitgan.training.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]
P16 = Preprocess(16)
TINY = get_preset("hit-tiny-32")


def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def classes(tmp_path):
    """cat/ (2 images, one nested), dog/ (1 image): classes 0 and 1 by sorted name."""
    root = tmp_path / "pets"
    _image(root / "dog" / "d.png", 200)
    _image(root / "cat" / "c.png", 10)
    _image(root / "cat" / "more" / "c2.png", 20)
    return root


def _json(root: Path, data: object) -> None:
    (root / "dataset.json").write_text(json.dumps(data))


# ---- labels ----------------------------------------------------------------------------

def test_labels_from_sub_folders(classes):
    data = ImageDataset(classes, P16, progress=False, labels="require")
    assert data.labels.class_names == ("cat", "dog")
    assert dict(zip(data.names, data.labels.values.tolist(), strict=True)) == {
        "cat/c.png": 0, "cat/more/c2.png": 0, "dog/d.png": 1}
    image, label = Labelled(data)[data.names.index("dog/d.png")]
    assert label == 1 and image.shape == (3, 16, 16) and image.min() > 0.5  # the bright one
    assert ImageDataset(classes, P16, progress=False).labels is None  # not asked for
    assert data.describe()["classes"] == ["cat", "dog"]


def test_labels_from_a_zip_of_class_folders(classes, tmp_path):
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(classes.rglob("*.png")):
            z.write(p, p.relative_to(classes).as_posix())
    data = ImageDataset(archive, P16, progress=False, labels="require")
    assert data.labels.class_names == ("cat", "dog") and sorted(data.labels.values) == [0, 0, 1]


def test_labels_from_dataset_json(tmp_path):
    root = tmp_path / "flat"
    for i in range(3):
        _image(root / f"{i}.png", 50 * i)
    _json(root, {"labels": [["0.png", 2], ["1.png", 0], ["2.png", 1], ["gone.png", 0]]})
    data = ImageDataset(root, P16, progress=False, labels="require")
    assert data.labels.values.tolist() == [2, 0, 1] and data.labels.class_names == ("0", "1", "2")
    _json(root, {"labels": [["0.png", 1], ["1.png", 0], ["2.png", 1]],
                 "class_names": ["zero", "one"]})
    assert ImageDataset(root, P16, progress=False, labels="auto").labels.class_names == (
        "zero", "one")


@pytest.mark.parametrize(("content", "message"), [
    ({"labels": [["0.png", 0]]}, r"1\.png has no label"),
    ({"labels": [["0.png", 0], ["1.png", "cat"]]}, r"1\.png: label 'cat' is not an integer"),
    ({"labels": [["0.png", 0], ["1.png", 1.5]]}, r"1\.png: label 1\.5 is not an integer"),
    ({"labels": [["0.png", 0], ["1.png", -1]]}, r"1\.png: label -1 is negative"),
    ({"labels": [["0.png", 0], ["1.png", 2]], "class_names": ["a", "b"]},
     r"1\.png: label 2 is out of range: there are 2 classes"),
    ({"labels": [["0.png", 0], ["1.png", 2]]}, r"class 1 \('1'\) has no usable image"),
    ({"labels": [["0.png"]]}, r'write it as \["path/in/dataset\.png", 3\]'),
    ({"labels": None}, r'says "labels": null.*their own sub-folder'),
])
def test_bad_dataset_json_names_the_file(tmp_path, content, message):
    root = tmp_path / "flat"
    _image(root / "0.png", 0)
    _image(root / "1.png", 255)
    _json(root, content)
    with pytest.raises(DatasetError, match=message) as info:
        ImageDataset(root, P16, progress=False, labels="require")
    assert str(root) in str(info.value)
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"dataset\.json: not valid JSON"):
        ImageDataset(root, P16, progress=False, labels="require")


def test_bad_folder_labels_and_unlabelled_data(classes, tmp_path):
    _image(classes / "loose.png", 5)
    with pytest.raises(DatasetError, match=r"pets/loose\.png is not in a class sub-folder; put "
                       "the images of each class in their own sub-folder"):
        ImageDataset(classes, P16, progress=False, labels="require")
    assert ImageDataset(classes, P16, progress=False, labels="auto").labels is None
    (classes / "loose.png").unlink()
    (classes / "emu").mkdir()
    (classes / "emu" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"class 2 \('emu'\) has no usable image"):
        ImageDataset(classes, P16, progress=False, labels="require")
    flat = tmp_path / "flat"
    _image(flat / "a.png", 1)
    with pytest.raises(DatasetError, match=r"flat has no labels; put the images of each class"):
        ImageDataset(flat, P16, progress=False, labels="require")
    with pytest.raises(ValueError, match="labels='yes'"):
        ImageDataset(flat, P16, progress=False, labels="yes")


def test_docs_commands(classes, tmp_path, capsys, monkeypatch):
    """docs/conditional.md's train and generate commands, at toy size (steps, batch)."""
    monkeypatch.chdir(classes.parent)
    assert main(["train", "--data", "pets/", "--cond", "--out", "runs/pets", "--steps", "1",
                 "--batch", "2", "--workers", "0"]) == 0
    assert main(["generate", "--model", "runs/pets", "--class", "all", "--seeds", "0-7",
                 "--out", "out/pets"]) == 0
    assert main(["generate", "--model", "runs/pets", "--class", "dog", "--seeds", "0-15",
                 "--out", "out/dogs"]) == 0
    assert len(list(Path("out/dogs").glob("class001-seed*.png"))) == 16
    assert "16 images and grid.png" in capsys.readouterr().out


def test_train_cond_on_unlabelled_data_says_how_to_label(tmp_path, capsys):
    flat = tmp_path / "flat"
    _image(flat / "a.png", 1)
    assert main(["train", "--data", str(flat), "--cond", "--out", str(tmp_path / "r"),
                 "--steps", "1", "--workers", "0"]) == 1
    assert "has no labels; put the images of each class in their own sub-folder" in (
        capsys.readouterr().err)


def test_mnist_labels_and_the_dataset_tool_keeps_them(classes, tmp_path, capsys):
    digits = ImageDataset("mnist", Preprocess(32), progress=False, labels="require")
    assert digits.labels.num_classes == 10 and digits.labels.counts().min() > 400
    report = make_dataset_zip(str(classes), tmp_path / "pets.zip", P16, progress=False)
    assert report["class_names"] == ["cat", "dog"] and sorted(p[1] for p in report["labels"]) == [
        0, 0, 1]
    assert main(["dataset", str(classes), str(tmp_path / "pets.zip"), "--resolution", "16"]) == 0
    assert "labels of 2 classes kept" in capsys.readouterr().out
    packed = ImageDataset(tmp_path / "pets.zip", P16, progress=False, labels="require")
    assert packed.labels.class_names == ("cat", "dog")
    source = ImageDataset(classes, P16, progress=False, labels="require")
    for name, label in report["labels"]:  # the pixels and the label of each file kept together
        i = packed.names.index(name)
        j = int(np.argmin([(packed[i] - source[k]).abs().max() for k in range(len(source))]))
        assert label == source.labels.values[j]
    assert main(["dataset", str(classes), str(tmp_path / "plain.zip"), "--resolution", "16",
                 "--labels", "none"]) == 0
    assert json.loads(zipfile.ZipFile(tmp_path / "plain.zip").read("dataset.json"))[
        "labels"] is None
    with pytest.raises(DatasetError, match='"labels": null'):
        ImageDataset(tmp_path / "plain.zip", P16, progress=False, labels="require")


# ---- models ----------------------------------------------------------------------------

def _conditional(k: int = 3) -> tuple[HiTGenerator, StyleGANDiscriminator]:
    torch.manual_seed(0)
    return (HiTGenerator(dataclasses.replace(TINY.generator, num_classes=k)),
            StyleGANDiscriminator(dataclasses.replace(TINY.discriminator, num_classes=k)))


def test_conditional_forward_backward_every_parameter_gets_a_gradient():
    G, D = _conditional()
    z, y = torch.randn(4, 64), torch.tensor([0, 1, 2, 1])
    images = G(z, y)  # (4, 3, 32, 32)
    logits = D(images, y)
    assert images.shape == (4, 3, 32, 32) and logits.shape == (4, 1)
    (logits.sum() + images.square().mean()).backward()
    for name, model in (("G", G), ("D", D)):
        for n, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}.{n}"
    assert G.class_embed.weight.grad.abs().sum() > 0 and D.class_embed.weight.grad.abs().sum() > 0


def test_the_label_changes_the_image_and_the_logit():
    G, D = _conditional()
    G.eval()
    z = torch.randn(1, 64).repeat(3, 1)
    images = G(z, torch.arange(3))
    assert not torch.allclose(images[0], images[1]) and not torch.allclose(images[1], images[2])
    same = images[:1].repeat(3, 1, 1, 1)
    logits = D(same, torch.arange(3))
    assert logits.std() > 0


def test_bad_labels_and_configs_are_refused():
    G, D = _conditional()
    z = torch.randn(2, 64)
    with pytest.raises(ValueError, match=r"class-conditional \(3 classes\): pass labels"):
        G(z)
    with pytest.raises(ValueError, match=r"classes are 0\.\.2"):
        G(z, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"give one per latent, shape \(2,\)"):
        G(z, torch.tensor([0]))
    with pytest.raises(ValueError, match="pass labels"):
        D(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="unconditional generator"):
        HiTGenerator(TINY.generator)(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_classes=1: one class is no condition"):
        GeneratorConfig(num_classes=1)
    with pytest.raises(ValueError, match=r"num_classes=-2: must be an integer >= 0"):
        DiscriminatorConfig(num_classes=-2)
    with pytest.raises(ValueError, match=r"class_names=\('a',\): give one name per class \(3\)"):
        GeneratorConfig(num_classes=3, class_names=("a",))


def test_num_classes_zero_is_the_unconditional_model():
    """Same parameter names and shapes as before conditioning existed, and the same function
    (the official parity tests in test_reference.py use the default configs)."""
    g0 = HiTGenerator(TINY.generator)
    assert sum(p.numel() for p in g0.parameters()) == 1_187_747  # README's table
    d0 = StyleGANDiscriminator(TINY.discriminator)
    assert sum(p.numel() for p in d0.parameters()) == 3_481_153
    assert not any("class" in k for k in [*g0.state_dict(), *d0.state_dict()])
    G, D = _conditional(k=10)
    extra = sum(p.numel() for p in G.parameters()) - 1_187_747
    # the class embedding, and the z half more of the two input projections' inputs
    assert extra == 10 * 64 + 64 * (8 * 8 * 128 + 16 * 128)
    assert sum(p.numel() for p in D.parameters()) - 3_481_153 == 10 * 256


def test_save_load_round_trip_keeps_classes(tmp_path):
    cfg = dataclasses.replace(TINY.generator, num_classes=2, class_names=("cat", "dog"))
    torch.manual_seed(0)
    G = HiTGenerator(cfg).eval()
    loaded = from_pretrained(save_pretrained(G, tmp_path / "g")).eval()
    assert loaded.config.num_classes == 2 and loaded.config.class_names == ("cat", "dog")
    z, y = torch.randn(3, 64), torch.tensor([1, 0, 1])
    assert torch.equal(loaded(z, y), G(z, y))
    d = StyleGANDiscriminator(dataclasses.replace(TINY.discriminator, num_classes=2))
    assert from_pretrained(save_pretrained(d, tmp_path / "d")).config.num_classes == 2


# ---- training, generate, eval ----------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two conditional steps on class folders, with bCR, DiffAugment and 2 micro-batches."""
    root = tmp_path_factory.mktemp("cond")
    for k, name in enumerate(("cat", "dog", "emu")):
        for i in range(4):
            _image(root / "data" / name / f"{i}.png", 60 * k + 10 * i)
    cfg = TrainConfig(data=str(root / "data"), cond=True, out=str(root / "run"), steps=2,
                      batch=4, batch_per_device=2, workers=0, bcr=True, diffaug=True,
                      sample_every=1, checkpoint_every=2, ema_start=1)
    trainer = Trainer(cfg, progress=False)
    trainer.run()
    return trainer


def test_training_with_labels_saves_classes(run):
    assert run.G.config.num_classes == 3 and run.D.config.num_classes == 3
    G = load_generator(run.run_dir)
    assert G.config.class_names == ("cat", "dog", "emu")
    grid = Image.open(run.run_dir / "samples" / "step-00000002.png")
    assert grid.size == (8 * 34 - 2, 3 * 34 - 2)  # a row of 8 per class
    record = json.loads((run.run_dir / "config.json").read_text())
    assert record["train"]["cond"] and record["generator"]["class_names"] == ["cat", "dog", "emu"]
    with pytest.raises(Exception, match="made with --cond; resume it the same way"):
        Trainer(dataclasses.replace(run.cfg, cond=False, resume="auto", steps=3),
                progress=False)


@pytest.mark.parametrize(("penalty", "mbstd"), [("wgan", False), ("r1+r2", True)])
def test_other_penalties_take_labels(run, tmp_path, penalty, mbstd):
    """WGAN-GP and R1+R2 with labels; --d-mbstd (the second 20-minute run's D) too."""
    cfg = dataclasses.replace(run.cfg, out=str(tmp_path / "r"), penalty=penalty, steps=1,
                              bcr=False, d_mbstd=mbstd)
    trainer = Trainer(cfg, progress=False)
    stats = trainer.train_step([next(iter(trainer.loader()))])
    assert all(np.isfinite(v) for v in stats.values())


def test_mode_seeking_pairs_fakes_of_one_class(run, tmp_path):
    """--mode-seeking: fakes 2i and 2i+1 share a class, and G's loss carries the term."""
    cfg = dataclasses.replace(run.cfg, out=str(tmp_path / "m"), steps=1, mode_seeking=1.0,
                              batch=8, batch_per_device=4)
    trainer = Trainer(cfg, progress=False)
    seen = []
    trainer.G.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    stats = trainer.train_step()
    labels = torch.cat(seen)
    assert torch.equal(labels[0::2], labels[1::2]) and len(set(labels.tolist())) > 1
    assert stats["G/mode_seeking"] > 0 and np.isfinite(stats["G/loss"])
    with pytest.raises(ValueError, match=r"make batch_per_device .* even"):
        dataclasses.replace(cfg, batch=6, batch_per_device=3).micro_batch(2)
    with pytest.raises(ValueError, match="mode_seeking=-1"):
        dataclasses.replace(cfg, mode_seeking=-1)


def test_generate_class(run, tmp_path, capsys):
    model, out = str(run.run_dir), tmp_path / "gen"
    assert main(["generate", "--model", model, "--class", "all", "--seeds", "0-7",
                 "--out", str(out)]) == 0
    assert "24 images and grid.png, a row per class (3)" in capsys.readouterr().out
    assert Image.open(out / "grid.png").size == (8 * 34 - 2, 3 * 34 - 2)
    assert (out / "class002-seed0007.png").exists()
    record = json.loads((out / "generate.json").read_text())
    assert record["classes"] == [0, 1, 2] and record["class_names"] == ["cat", "dog", "emu"]
    assert main(["generate", "--model", model, "--class", "dog", "--seeds", "3",
                 "--out", str(tmp_path / "dog")]) == 0
    dog = np.asarray(Image.open(tmp_path / "dog" / "class001-seed0003.png"))
    assert np.array_equal(dog, np.asarray(Image.open(out / "class001-seed0003.png")))
    assert main(["generate", "--model", model, "--class", "1", "--interpolate", "0,1",
                 "--frames", "3", "--out", str(tmp_path / "walk.gif")]) == 0
    for argv, message in (
            ([], "class-conditional (3 classes): pass --class K"),
            (["--class", "5"], "class 5 is out of range; use 0..2 or names cat, dog, emu"),
            (["--class", "yak"], "'yak' is no class"),
            (["--class", "0,1", "--interpolate", "0,1"], "an interpolation keeps one class")):
        assert main(["generate", "--model", model, "--out", str(tmp_path / "x"), *argv]) == 1
        assert message in capsys.readouterr().err
    assert main(["generate", "--class", "1", "--out", str(tmp_path / "y")]) == 1
    assert "this generator is unconditional" in capsys.readouterr().err


def test_parse_classes():
    assert parse_classes("all", 3) == [0, 1, 2]
    assert parse_classes("2,0-1", 3) == [2, 0, 1]
    assert parse_classes("b", 2, ("a", "b")) == [1]
    assert parse_classes(None, 0) is None


@pytest.mark.slow
def test_eval_per_class(run, tmp_path, capsys):
    data = run.cfg.data
    argv = ["eval", "--model", str(run.run_dir), "--reference", data, "-n", "6",
            "--cache-dir", str(tmp_path / "cache"), "--metrics-file", str(tmp_path / "m.jsonl"),
            "--workers", "0", "--no-progress", "--per-class"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for k in range(3):
        assert f"fid6_full_class{k} " in out
    record = json.loads((tmp_path / "m.jsonl").read_text())
    assert len(record["results"]) == 4
    stats = tmp_path / "s.npz"
    assert main(["eval", "--model", str(run.run_dir), "--reference", str(stats),
                 "--per-class", "--no-progress"]) == 1
    assert "needs the labels of the reference images" in capsys.readouterr().err


@pytest.mark.slow
def test_conditional_script_as_documented(tmp_path):
    """docs/conditional.md's command, scripts/conditional.sh, at toy size."""
    env = {**os.environ, "MINUTES": "0.02", "PER_CLASS": "4", "RUN": str(tmp_path / "run"),
           "OUT": str(tmp_path / "out"), "EPOCHS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "conditional.sh")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "classification accuracy: generated " in proc.stdout
    result = json.loads((tmp_path / "run" / "conditional.json").read_text())
    assert result["real_test_accuracy"] > 0.8  # the classifier itself works after one epoch
    assert len(result["generated_per_class"]) == 10 and result["training"]["steps"] >= 1
    assert result["training"]["options"]["mode_seeking"] == 0.03  # the auto recipe's, for --cond
    assert Image.open(tmp_path / "out" / "grid.png").size == (8 * 34 - 2, 10 * 34 - 2)
    # docs/conditional.md's scoring of an existing run
    again = conditional.main(["--run", str(tmp_path / "run"), "--per-class", "4",
                              "--epochs", "1"])
    assert again["generated_per_class"] == result["generated_per_class"]  # deterministic
    assert again["spread_ratio"] == result["spread_ratio"] > 0
    assert "within-class spread" in proc.stdout
    assert again["training"] is None


def test_spread_of_a_collapsed_set_is_zero():
    one = torch.rand(1, 3, 4, 4)
    assert classifier.spread(one.repeat(5, 1, 1, 1)) == 0
    pair = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])  # std of (0, 1): 0.7071
    assert classifier.spread(pair) == pytest.approx(2 ** -0.5)


def test_classifier_reads_real_images_with_the_generators_channels():
    """A one-channel G (grey data) is scored by a one-channel classifier on grey reals."""
    G = HiTGenerator(dataclasses.replace(TINY.generator, num_classes=10, out_channels=1)).eval()
    images, labels, names = classifier.load_labelled(
        "mnist", Preprocess(32, channels=G.config.out_channels), 40)
    assert images.shape == (40, 1, 32, 32) and len(labels) == 40 and len(names) == 10
    train, test = classifier.split(len(images))
    assert len(test) == 8 and not set(train) & set(test)
    model = classifier.train_classifier(images[train], labels[train], 10, epochs=1)
    assert classifier.predict(model, images[test]).shape == (8,)
    accuracy, spreads = classifier.generated_scores(G, model, per_class=2)
    assert len(accuracy) == len(spreads) == 10 and all(0 <= a <= 1 for a in accuracy)
