"""Shared fixtures. Tests marked ``cuda`` are skipped when no GPU is visible."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is visible")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def thermometer_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chapter 5 linear model trained with the book's settings (all 11 readings)."""
    from torchship.training import thermometer

    cfg = thermometer.ThermometerConfig(epochs=5000, learning_rate=1e-2, method="autograd")
    result = thermometer.train_linear(cfg, progress=False)
    return thermometer.save_result(result, "thermometer_linear", cfg, tmp_path_factory.mktemp("ckpt") / "lin.ckpt")


@pytest.fixture(scope="session")
def thermometer_repository(tmp_path_factory: pytest.TempPathFactory, thermometer_checkpoint: Path) -> Path:
    """A model repository holding the thermometer model as TorchScript."""
    from torchship.export import export_checkpoint

    repo = tmp_path_factory.mktemp("repo")
    export_checkpoint(thermometer_checkpoint, repo, ["torchscript"])
    return repo


@pytest.fixture(scope="session")
def thermometer_pt2_repository(tmp_path_factory: pytest.TempPathFactory, thermometer_checkpoint: Path) -> Path:
    """The same model as TorchScript and as an AOTInductor .pt2 package (a slow compile: only where needed)."""
    from torchship.export import export_checkpoint

    repo = tmp_path_factory.mktemp("repo_pt2")
    export_checkpoint(thermometer_checkpoint, repo, ["torchscript", "pt2"])
    return repo
