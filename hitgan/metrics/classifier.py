"""Does a class-conditional generator make the class it is asked for? A classification accuracy
score: a small CNN trained on the real labelled data classifies generated samples, and
"generated as class k" counts as right when it is "classified as k".

The classifier (``Classifier``) trains on a fixed 80% of the labelled images (``split``) and is
tested on the other 20%; the real images are read with the generator's channel count
(``load_labelled``: a one-channel generator of grey data is scored by a one-channel classifier).
Accuracy rewards one good image per class as much as a varied class, so ``spread`` measures how
much a class varies (the mean over pixels of the std over images): a class collapsed to one
image has a spread near 0 whatever its accuracy. ``python -m bench.quality.conditional`` trains
a conditional run and reports both.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hitgan.data.dataset import ImageDataset, Preprocess
from hitgan.models.generator import HiTGenerator
from hitgan.sampling import seed_latents

TEST_FRACTION = 0.2


class Classifier(nn.Module):
    """Two conv-pool stages and an MLP: (B, C, R, R) in [-1, 1] -> (B, K) logits."""

    def __init__(self, channels: int, resolution: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))  # (B, 64, R/4, R/4)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25),
                                  nn.Linear(64 * (resolution // 4) ** 2, 128), nn.ReLU(),
                                  nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_labelled(data: str, preprocess: Preprocess, max_images: int | None
                  ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """All (or ``max_images``, a fixed random subset) images (N, C, R, R), labels (N,) and
    class names of a labelled dataset; C is ``preprocess.channels``, the generator's."""
    dataset = ImageDataset(data, preprocess, progress=False, labels="require")
    assert dataset.labels is not None
    order = np.random.default_rng(0).permutation(len(dataset))[:max_images]
    images = torch.stack([dataset[int(i)] for i in order])
    return images, torch.from_numpy(dataset.labels.values[order]), dataset.labels.class_names


def split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed (train, test) split of ``range(n)``: the last TEST_FRACTION of a seeded
    permutation is the test split."""
    order = np.random.default_rng(1).permutation(n)
    cut = n - max(1, round(n * TEST_FRACTION))
    return order[:cut], order[cut:]


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     epochs: int, seed: int = 0) -> Classifier:
    """Adam, batch 64, ``epochs`` passes over ``images`` (seeded, deterministic)."""
    torch.manual_seed(seed)
    model = Classifier(images.shape[1], images.shape[2], num_classes)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(images), generator=gen).split(64):
            loss = F.cross_entropy(model(images[rows]), labels[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def predict(model: Classifier, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([model(x).argmax(1) for x in images.split(batch)])


def per_class_accuracy(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int
                       ) -> list[float]:
    """Of the images of each class, the fraction predicted as that class."""
    return [float((predicted[labels == k] == k).float().mean()) for k in range(num_classes)]


def spread(images: torch.Tensor) -> float:
    """How much a set of images (N, C, H, W) varies: the mean over pixels of their std over N."""
    return float(images.std(0).mean())


@torch.no_grad()
def generated_scores(G: HiTGenerator, model: Classifier, per_class: int, batch: int = 250
                     ) -> tuple[list[float], list[float]]:
    """Per class k, of ``per_class`` samples generated as k (seeds 0..per_class-1): the
    fraction the classifier calls k, and their spread (a class collapsed to one image: ~0)."""
    z = seed_latents(range(per_class), G.config.latent_dim)
    accuracy, spreads = [], []
    for k in range(G.config.num_classes):
        images = torch.cat([G(zs, torch.full((len(zs),), k)).clamp(-1, 1)  # as saved
                            for zs in z.split(batch)])
        accuracy.append(float((predict(model, images) == k).float().mean()))
        spreads.append(spread(images))
    return accuracy, spreads
