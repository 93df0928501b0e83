"""In-memory image classification data: the shape every image recipe hands to the training loop.

The book's image sets (CIFAR-2: 12,000 images; scikit-learn digits: 1,797)
fit in memory after preprocessing, so a split is two tensors, not a
``Dataset`` that decodes on every access.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class ImageSplit:
    """Preprocessed images (float32 ``[N, C, H, W]``) and their labels (int64 ``[N]``)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ClassificationData:
    """A train and a validation split, the class names, and how the images were made (for provenance)."""

    train: ImageSplit
    val: ImageSplit
    classes: tuple[str, ...]
    description: dict[str, Any]


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, val) indices holding out ``val_fraction`` of every class, so small classes stay represented."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = max(1, round(val_fraction * len(idx)))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(val)).values
