"""Training writes the grid of its fixed sample latents to TensorBoard as an image, the same
grid it writes to samples/, when tensorboard is installed."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from hitgan.training.config import TrainConfig
from hitgan.training.loop import Trainer


def test_sample_grids_go_to_tensorboard(tmp_path):
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard is not installed (the tensorboard extra)")
    run = tmp_path / "run"
    cfg = TrainConfig(out=str(run), steps=1, batch=4, workers=0, sample_every=1,
                      checkpoint_every=1000, bn_recalibrate=0, seed=1)
    Trainer(cfg, progress=False).run()
    events = accumulator.EventAccumulator(str(run / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert "samples" in events.Tags()["images"]
    shown = events.Images("samples")
    assert [e.step for e in shown] == [1, 1]  # every sample_every steps, and at the end
    on_disk = np.asarray(Image.open(run / "samples" / "step-00000001.png").convert("RGB"))
    in_tensorboard = np.asarray(Image.open(io.BytesIO(shown[-1].encoded_image_string)))
    np.testing.assert_array_equal(in_tensorboard[..., :3], on_disk)
