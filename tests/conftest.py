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


def _eager(checkpoint: Path) -> torch.nn.Module:
    from torchship.training.checkpoint import build_model, load_checkpoint

    return build_model(load_checkpoint(checkpoint))  # in eval mode already


@pytest.fixture(scope="session")
def thermometer_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chapter 5 linear model trained with the book's settings (all 11 readings)."""
    from torchship.training import thermometer

    cfg = thermometer.ThermometerConfig(epochs=5000, learning_rate=1e-2, method="autograd")
    result = thermometer.train_linear(cfg, progress=False)
    return thermometer.save_result(result, "thermometer_linear", cfg, tmp_path_factory.mktemp("ckpt") / "lin.ckpt")


@pytest.fixture
def thermometer_eager(thermometer_checkpoint: Path) -> torch.nn.Module:
    """``thermometer_checkpoint`` as an eager PyTorch model in eval mode: the reference outputs are compared to."""
    return _eager(thermometer_checkpoint)


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


@pytest.fixture(scope="session")
def net_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Chapter 8 ``Net`` (CIFAR-2 CNN, 3x32x32 -> 2 logits), untrained and seeded.

    For tests that need a convolutional model's shapes and batching, not its accuracy.
    """
    from torchship.export import random_init_checkpoint
    from torchship.training.checkpoint import save_checkpoint

    checkpoint = random_init_checkpoint("net", seed=0)  # leaves the global RNG alone
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "net.ckpt", checkpoint)


@pytest.fixture
def net_eager(net_checkpoint: Path) -> torch.nn.Module:
    """``net_checkpoint`` as an eager PyTorch model in eval mode."""
    return _eager(net_checkpoint)


@pytest.fixture(scope="session")
def net_repository(tmp_path_factory: pytest.TempPathFactory, net_checkpoint: Path) -> Path:
    """``net_checkpoint`` exported as TorchScript (max batch 64)."""
    from torchship.export import export_checkpoint

    repo = tmp_path_factory.mktemp("net_repo")
    export_checkpoint(net_checkpoint, repo, ["torchscript"], max_batch_size=64)
    return repo
