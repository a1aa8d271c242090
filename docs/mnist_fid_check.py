"""FID on real images (docs/evaluation.md): two disjoint halves of the 5,000 built-in MNIST digits,
then the odd half blurred and/or shifted. About 20 minutes on a 2-core CPU."""

import numpy as np
import torch
from PIL import ImageFilter

from hitgan.data.dataset import ImageDataset, Preprocess
from hitgan.metrics.features import InceptionExtractor
from hitgan.metrics.fid import fid_from_features
from hitgan.metrics.stats import extract_features

digits = ImageDataset("mnist", Preprocess(32))  # 5,000 digits, 500 per class, in class order
inception = InceptionExtractor()
feats, seconds = extract_features(digits, inception, batch=50, progress=False)
print(f"Inception features: {len(feats) / seconds:.1f} images/s")
even, odd = feats[0::2], feats[1::2]  # disjoint halves, 250 digits of each class in each


def altered(blur: bool, shift: int) -> np.ndarray:
    """Features of the odd half, blurred (Gaussian, radius 1 px) and/or shifted down-right."""
    images = []
    for i in range(1, len(digits), 2):
        img = digits.load_image(i)
        img = img.filter(ImageFilter.GaussianBlur(1)) if blur else img
        arr = np.zeros_like(np.asarray(img))
        arr[shift:, shift:] = np.asarray(img)[:32 - shift, :32 - shift]
        images.append(torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1)
    return extract_features(images, inception, batch=50, progress=False)[0]


print(f"FID(even half, odd half)                 = {fid_from_features(even, odd):.2f}")
for blur, shift in [(True, 0), (False, 3), (True, 3)]:
    fid = fid_from_features(even, altered(blur, shift))
    print(f"FID(even half, odd half blur={blur!s:5} shift={shift}) = {fid:.2f}")
