"""scikit-learn's 8x8 handwritten digits as 32x32 RGB images for chapter 8's CNNs.

The data set ships inside scikit-learn (1,797 images, ten classes), so these
recipes train on real data offline. The pixels become images exactly as the
``digits_*`` registry entries declare (``torchship.models.cifar.digits_to_images``),
so the checkpoint's preprocessing dict is what training did.
"""

from __future__ import annotations

import torch

from torchship.data.images import ClassificationData, ImageSplit, stratified_split
from torchship.models.cifar import DIGITS_LABELS, digits_to_images


def load_digits_pixels() -> tuple[torch.Tensor, torch.Tensor]:
    """The raw data set: pixels ``[1797, 8, 8]`` (float32, values 0..16) and int64 labels."""
    from sklearn.datasets import load_digits  # the train extra; the CLI names it when missing (torchship.extras)

    bunch = load_digits()
    pixels = torch.as_tensor(bunch.images, dtype=torch.float32)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return pixels, labels


def digits(val_fraction: float = 0.2, split_seed: int = 0) -> ClassificationData:
    """A seeded, stratified train/validation split of the digits, preprocessed for the ``digits_*`` models."""
    pixels, labels = load_digits_pixels()
    train_idx, val_idx = stratified_split(labels, val_fraction, split_seed)
    images = digits_to_images(pixels)
    return ClassificationData(
        train=ImageSplit(images[train_idx], labels[train_idx]),
        val=ImageSplit(images[val_idx], labels[val_idx]),
        classes=DIGITS_LABELS,
        description={
            "dataset": "sklearn.datasets.load_digits",
            "val_fraction": val_fraction,
            "split_seed": split_seed,
            "stratified": True,
            "train_samples": len(train_idx),
            "val_samples": len(val_idx),
        },
    )
