"""Training recipes: registered data sets, and one recipe per weights variant that declares one.

A ``Dataset`` says how to load a classification data set for a variant
(``load(entry, **options)`` -> ``ClassificationData``), which command-line
options that takes, and the default hyperparameters. Every registry variant
whose ``dataset`` names a registered data set gets the recipe
``<dataset>-<architecture>`` (``cifar2-net``, ``digits-net``), with the data
set's defaults overridden by the variant's ``recipe`` dict. Recipes follow the
variant's declaration, never its name.

Data sets of other packages come in through the ``torchship.recipes``
entry-point group (``models.plugins``), loaded on the first lookup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torchship import models
from torchship.data.images import ClassificationData
from torchship.models import plugins


@dataclass(frozen=True)
class Hyperparameters:
    """What a recipe passes to the training loop; the SGD settings of the book's chapters 7 and 8."""

    epochs: int
    batch_size: int
    learning_rate: float
    momentum: float = 0.0


@dataclass(frozen=True)
class DatasetOption:
    """One option of a data set's loader: ``name`` is its keyword, ``--name-with-dashes`` on the command line."""

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str


@dataclass(frozen=True)
class Dataset:
    """A classification data set the recipes can train on.

    ``load(entry, **options)`` returns the train and validation splits prepared
    the way ``entry`` (a ``ModelEntry``) declares its preprocessing. ``summary``
    is the one line ``torchship train --help`` shows after the model's name.
    """

    name: str
    load: Callable[..., ClassificationData]
    summary: str
    defaults: Hyperparameters
    options: Sequence[DatasetOption] = ()


_DATASETS: dict[str, Dataset] = {}


def register_dataset(dataset: Dataset) -> Dataset:
    if dataset.name in _DATASETS:
        raise ValueError(f"data set {dataset.name!r} is registered twice")
    for option in dataset.options:
        if not option.name.isidentifier():
            raise ValueError(f"data set {dataset.name!r}: option {option.name!r} is not a Python identifier")
    _DATASETS[dataset.name] = dataset
    return dataset


def _discover() -> None:
    """The book's data sets, then those of installed packages."""
    from torchship.training import image_recipes  # noqa: F401  (registers cifar2 and digits)

    plugins.load_group(plugins.RECIPES_GROUP)


def get_dataset(name: str) -> Dataset:
    _discover()
    try:
        return _DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown data set {name!r}; registered: {', '.join(sorted(_DATASETS))}") from None


def datasets() -> list[str]:
    _discover()
    return sorted(_DATASETS)


@dataclass(frozen=True)
class ImageRecipe:
    name: str  # CLI name, e.g. "cifar2-net"
    model: str  # registry name (a weights variant), e.g. "net"
    dataset: str  # a registered data set, e.g. "cifar2"
    epochs: int
    batch_size: int
    learning_rate: float
    momentum: float
    summary: str  # one line for --help

    def load_data(self, **options: Any) -> ClassificationData:
        return get_dataset(self.dataset).load(models.get(self.model), **options)


def image_recipes() -> list[ImageRecipe]:
    """A recipe for every variant whose data set is registered, sorted by name."""
    known = set(datasets())
    entries = [models.get(n) for n in models.names()]
    entries = [e for e in entries if e.dataset in known]
    taken: dict[str, int] = {}
    for e in entries:
        key = _recipe_name(e.dataset, e.architecture)  # type: ignore[arg-type]
        taken[key] = taken.get(key, 0) + 1
    recipes = []
    for e in entries:
        dataset = _DATASETS[e.dataset]  # type: ignore[index]
        name = _recipe_name(dataset.name, e.architecture)
        if taken[name] > 1:  # two variants of one architecture on one data set: name them by variant
            name = _recipe_name(dataset.name, e.name)
        unknown = set(e.recipe) - {f.name for f in dataclasses.fields(Hyperparameters)}
        if unknown:
            raise ValueError(f"variant {e.name!r}: unknown recipe setting(s) {sorted(unknown)}")
        hp = dataclasses.replace(dataset.defaults, **e.recipe)
        momentum = f" momentum {hp.momentum:g}" if hp.momentum else ""
        recipes.append(
            ImageRecipe(
                name=name,
                model=e.name,
                dataset=dataset.name,
                epochs=hp.epochs,
                batch_size=hp.batch_size,
                learning_rate=hp.learning_rate,
                momentum=hp.momentum,
                summary=f"{e.description}; SGD lr {hp.learning_rate:g}{momentum}, batch {hp.batch_size}, "
                f"{hp.epochs} epochs, CrossEntropy{_reported(e.metrics)}",
            )
        )
    return sorted(recipes, key=lambda r: r.name)


def _recipe_name(dataset: str, model: str) -> str:
    return f"{dataset}-{model.removeprefix(dataset + '_')}".replace("_", "-")


def _reported(metrics: dict[str, Any]) -> str:
    """The book's accuracies as a yardstick: "; book: train 0.93, val 0.89"."""
    book = metrics.get("book")
    if not isinstance(book, dict):
        return ""
    parts = [
        f"{split} {_accuracy(book[f'{split}_accuracy'])}" for split in ("train", "val") if f"{split}_accuracy" in book
    ]
    note = f" ({book['note']})" if book.get("note") else ""
    return f"; book: {', '.join(parts)}{note}" if parts else ""


def _accuracy(value: float) -> str:
    return f"{value:.2f}" if round(value, 2) == value else f"{value:g}"  # 0.90 as the book prints it, 0.794 too
