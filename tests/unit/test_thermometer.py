"""Run: .venv/bin/pytest tests/unit/test_thermometer.py

The chapter 5 numbers, to the precision the book prints them.
"""

from __future__ import annotations

import pytest
import torch

from torchship.training import thermometer
from torchship.training.thermometer import ThermometerConfig, TrainingDiverged


@pytest.mark.parametrize("method", ["manual", "autograd", "sgd"])
def test_linear_reproduces_the_books_5000_epoch_result(method: str) -> None:
    # Book: params tensor([ 5.3671, -17.3012]), loss 2.927647/2.927648 (S4:3712-3714, 3890-3892).
    result = thermometer.train_linear(ThermometerConfig(method=method), progress=False)
    w, b = float(result.model.w), float(result.model.b)
    assert abs(w - 5.3671) < 5e-5
    assert abs(b - (-17.3012)) < 5e-5
    assert abs(result.train_loss - 2.927647) < 2e-6


def test_adam_on_raw_input_reaches_the_books_loss() -> None:
    # Book: Adam(lr=1e-1), raw t_u, 2000 epochs -> loss 2.927646, w 0.5367, b -17.3021 (S4:4069-4071).
    cfg = ThermometerConfig(method="adam", learning_rate=1e-1, input_scale=1.0, epochs=2000)
    result = thermometer.train_linear(cfg, progress=False)
    assert abs(float(result.model.w) - 0.5367) < 5e-4
    assert abs(float(result.model.b) - (-17.3021)) < 5e-3
    assert abs(result.train_loss - 2.927646) < 1e-4


def test_100_epochs_on_normalised_input() -> None:
    # Book: epoch 100 -> params [2.7553, -2.5162] (S4:3664-3669).
    result = thermometer.train_linear(ThermometerConfig(epochs=100, method="manual"), progress=False)
    assert abs(float(result.model.w) - 2.7553) < 5e-4
    assert abs(float(result.model.b) - (-2.5162)) < 5e-4


def test_divergence_on_raw_input_is_an_error_and_writes_nothing(tmp_path) -> None:
    # Book: lr 1e-2 on raw t_u -> "Epoch 11, Loss inf" (S4:3557).
    cfg = ThermometerConfig(epochs=100, input_scale=1.0, method="manual")
    with pytest.raises(TrainingDiverged, match="diverged"):
        thermometer.train_linear(cfg, progress=False)
    from torchship.cli import main

    out = tmp_path / "x.ckpt"
    assert main(["train", "thermometer-linear", "--input-scale", "1", "--no-progress", "--out", str(out)]) == 1
    assert not out.exists()


def test_validation_split_is_seeded_and_held_out() -> None:
    cfg = ThermometerConfig(val_fraction=0.2, epochs=3000, seed=3)
    a = thermometer.train_linear(cfg, progress=False)
    b = thermometer.train_linear(cfg, progress=False)
    assert a.val_loss is not None and a.val_loss == b.val_loss
    assert torch.equal(a.model.w, b.model.w)
