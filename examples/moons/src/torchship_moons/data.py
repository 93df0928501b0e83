"""The data set: scikit-learn's two moons, generated (nothing is downloaded), split into train and validation.

Registered with ``torchship.register_dataset``; torchship imports this module
through the ``torchship.recipes`` entry point. Every model variant that declares
``dataset="moons"`` gets the recipe ``moons-<architecture>`` with these defaults.
"""

from __future__ import annotations

import torch

import torchship
from torchship.data.images import ClassificationData, ImageSplit


def load(entry: object, samples: int, noise: float, data_seed: int) -> ClassificationData:
    """``samples`` points (a fifth held out for validation) with Gaussian ``noise``, seeded."""
    from sklearn.datasets import make_moons

    points, labels = make_moons(n_samples=samples, noise=noise, random_state=data_seed)
    x = torch.as_tensor(points, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.int64)
    n_val = samples // 5
    return ClassificationData(
        train=ImageSplit(x[n_val:], y[n_val:]),
        val=ImageSplit(x[:n_val], y[:n_val]),
        classes=("upper moon", "lower moon"),
        description={"dataset": "sklearn.datasets.make_moons", "samples": samples, "noise": noise, "seed": data_seed},
    )


torchship.register_dataset(
    torchship.Dataset(
        name="moons",
        load=load,
        summary="two moons from scikit-learn, generated",
        defaults=torchship.Hyperparameters(epochs=20, batch_size=32, learning_rate=0.1, momentum=0.9),
        options=(
            torchship.DatasetOption("samples", int, 1000, "points generated (default %(default)s)"),
            torchship.DatasetOption("noise", float, 0.1, "Gaussian noise on each point (default %(default)s)"),
            torchship.DatasetOption("data_seed", int, 0, "seed of the generated points (default %(default)s)"),
        ),
    )
)
