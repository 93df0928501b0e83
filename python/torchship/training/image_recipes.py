"""The book's image data sets for the recipes: CIFAR-2 (chapters 7 and 8) and scikit-learn's digits.

Registered with ``training.recipes``; each registry variant that declares one
of them as its ``dataset`` gets a recipe (``cifar2-net``, ``digits-net``, ...).
Hyperparameters are the book's (CIFAR-2: SGD lr 1e-2, batch 64, 100 epochs);
digits is not in the book, its defaults are measured here (SGD + momentum 0.9
passes 95% in 2-4 epochs). Per-model exceptions live on the variants.
"""

from __future__ import annotations

from pathlib import Path

from torchship.data import cifar
from torchship.data.images import ClassificationData
from torchship.models.registry import ModelEntry
from torchship.training.recipes import Dataset, DatasetOption, Hyperparameters, register_dataset


def cifar2_data(model: str | ModelEntry, data_dir: Path) -> ClassificationData:
    """CIFAR-2 train (10,000) and validation (CIFAR-10 test, 2,000) normalized as the model's entry declares."""
    from torchship import models

    entry = models.get(model) if isinstance(model, str) else model
    norm = entry.preprocessing.get("normalize", {})
    mean = tuple(norm.get("mean", cifar.MEAN))
    std = tuple(norm.get("std", cifar.STD))
    train = cifar.cifar2(data_dir, train=True, mean=mean, std=std)
    val = cifar.cifar2(data_dir, train=False, mean=mean, std=std)
    return ClassificationData(
        train=train,
        val=val,
        classes=tuple(entry.labels or cifar.CIFAR2_CLASSES),
        description={
            "dataset": "CIFAR-2 (CIFAR-10 airplane/bird, labels {0: 0, 2: 1})",
            "data_dir": str(data_dir),
            "validation": "CIFAR-10 test_batch",
            "normalize": {"mean": list(mean), "std": list(std)},
            "train_samples": len(train),
            "val_samples": len(val),
        },
    )


def _digits(entry: ModelEntry, val_fraction: float, split_seed: int) -> ClassificationData:
    from torchship.data.digits import digits

    return digits(val_fraction=val_fraction, split_seed=split_seed)


register_dataset(
    Dataset(
        name="cifar2",
        load=lambda entry, data_dir: cifar2_data(entry, data_dir),
        summary="CIFAR-2 airplanes vs birds, chapters 7-8",
        defaults=Hyperparameters(epochs=100, batch_size=64, learning_rate=1e-2),
        options=(
            DatasetOption(
                "data_dir",
                Path,
                Path("data"),
                "folder holding cifar-10-batches-py/ from the CIFAR-10 python version (cifar-10-python.tar.gz, "
                "https://www.cs.toronto.edu/~kriz/cifar.html); nothing is downloaded (default %(default)s)",
            ),
        ),
    )
)
register_dataset(
    Dataset(
        name="digits",
        load=_digits,
        summary="chapter 8 CNN on scikit-learn digits",
        defaults=Hyperparameters(epochs=20, batch_size=64, learning_rate=5e-2, momentum=0.9),
        options=(
            DatasetOption("val_fraction", float, 0.2, "share of each class held out (default %(default)s)"),
            DatasetOption("split_seed", int, 0, "seed of the train/validation split (default %(default)s)"),
        ),
    )
)
