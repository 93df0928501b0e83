"""Run: .venv/bin/python -m pytest tests/unit/test_training.py -q

The image training loop on real data (scikit-learn digits, offline): accuracy,
checkpoint contents, TensorBoard scalars, seeded determinism, exact resume,
starting weights; and the chapter 6 thermometer MLP recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import pytest
import torch

from torchship import models
from torchship.cli import build_parser, main
from torchship.data.digits import digits
from torchship.data.images import ClassificationData, ImageSplit
from torchship.training.checkpoint import CheckpointError, build_model, load_checkpoint
from torchship.training.classifier import ClassifierConfig, train_classifier
from torchship.training.metrics import classification_metrics, confusion_matrix
from torchship.training.weights import WeightsError, load_weights, read_state_dict

# The best straight line through the chapter 5 readings (least squares on 0.1 * t_u) has MSE 2.927646.
BEST_LINEAR_MSE = 2.927646


@pytest.fixture(scope="module")
def digits_data() -> ClassificationData:
    return digits(val_fraction=0.2, split_seed=0)


@pytest.fixture(scope="module")
def small_digits(digits_data: ClassificationData) -> ClassificationData:
    """A few hundred digits: enough for every code path, small enough to train many times."""
    train, val = digits_data.train, digits_data.val
    return dataclasses.replace(
        digits_data,
        train=ImageSplit(train.images[:320], train.labels[:320]),
        val=ImageSplit(val.images[:128], val.labels[:128]),
    )


def _config(model: str, **overrides: object) -> ClassifierConfig:
    base = {"epochs": 2, "learning_rate": 5e-2, "momentum": 0.9, "device": "cpu", "tensorboard_dir": None}
    return ClassifierConfig(model=model, **{**base, **overrides})  # type: ignore[arg-type]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs by up to {float((a[key] - b[key]).abs().max()):g}"


def test_digits_net_reaches_95_percent_in_a_few_epochs(tmp_path: Path, digits_data: ClassificationData) -> None:
    out, runs = tmp_path / "digits_net.ckpt", tmp_path / "runs"
    began = time.perf_counter()
    args = ["train", "digits-net", "--epochs", "4", "--device", "cpu", "--no-progress"]
    assert main([*args, "--out", str(out), "--tb-dir", str(runs), "--comment", "t"]) == 0
    seconds = time.perf_counter() - began
    assert seconds < 60, f"4 epochs of digits-net took {seconds:.1f} s"

    ckpt = load_checkpoint(out)  # weights_only=True, resume state and history included
    assert ckpt["metrics"]["val_accuracy"] >= 0.95
    entry = models.get("digits_net")
    assert ckpt["model"] == "digits_net" and ckpt["labels"] == list(entry.labels or ())
    assert ckpt["preprocessing"] == entry.preprocessing
    assert ckpt["training"]["data"]["dataset"] == "sklearn.datasets.load_digits"
    assert ckpt["resume"]["epoch"] == 4 and ckpt["resume"]["samples_seen"] == 4 * len(digits_data.train)
    assert [h["epoch"] for h in ckpt["history"]] == [1.0, 2.0, 3.0, 4.0]

    # The checkpoint's model, rebuilt the way export does, scores what the checkpoint claims.
    model = build_model(ckpt)
    with torch.no_grad():
        predictions = model(digits_data.val.images).argmax(dim=1)
    matrix = confusion_matrix(predictions, digits_data.val.labels, 10)
    recomputed = classification_metrics(matrix, list(digits_data.classes))
    assert recomputed["correct/all"] / 100 == pytest.approx(ckpt["metrics"]["val_accuracy"], abs=1e-12)
    assert recomputed["pr/f1_score"] == pytest.approx(ckpt["metrics"]["val_f1"], abs=1e-12)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folders = sorted(p.name for p in (runs / "digits-net").iterdir())
    assert len(folders) == 2 and folders[0].endswith("-trn_cls-t") and folders[1].endswith("-val_cls-t")
    val_events = EventAccumulator(str(runs / "digits-net" / folders[1]))
    val_events.Reload()
    tags = set(val_events.Tags()["scalars"])
    assert {"loss/all", "correct/all", "pr/precision", "pr/recall", "pr/f1_score", "correct/7"} <= tags
    accuracy = val_events.Scalars("correct/all")
    assert [e.step for e in accuracy] == [k * len(digits_data.train) for k in (1, 2, 3, 4)]  # samples seen
    assert accuracy[-1].value == pytest.approx(100 * ckpt["metrics"]["val_accuracy"], rel=1e-6)


def test_same_seed_gives_identical_weights(small_digits: ClassificationData) -> None:
    cfg = _config("digits_net_batchnorm", epochs=1)
    a = train_classifier(cfg, small_digits, progress=False)
    b = train_classifier(cfg, small_digits, progress=False)
    _assert_same_weights(a.model.state_dict(), b.model.state_dict())
    assert a.metrics == b.metrics
    c = train_classifier(dataclasses.replace(cfg, seed=1), small_digits, progress=False)
    assert not torch.equal(a.model.state_dict()["conv1.weight"], c.model.state_dict()["conv1.weight"])


def test_resuming_2_plus_2_epochs_equals_4_epochs(tmp_path: Path, small_digits: ClassificationData) -> None:
    # Dropout draws random masks and momentum keeps optimizer state: both must survive the interruption.
    straight = train_classifier(_config("digits_net_dropout", epochs=4), small_digits, tmp_path / "4.ckpt", False)
    first = tmp_path / "2+2.ckpt"
    train_classifier(_config("digits_net_dropout", epochs=2), small_digits, first, progress=False)
    assert load_checkpoint(first)["resume"]["epoch"] == 2
    resumed = train_classifier(
        _config("digits_net_dropout", epochs=4, resume=str(first)), small_digits, first, progress=False
    )
    _assert_same_weights(straight.model.state_dict(), resumed.model.state_dict())
    assert resumed.history == straight.history
    # Early on some digit is never predicted: its precision is undefined, stored as None (valid JSON), not nan.
    assert any(row["train_f1"] is None for row in straight.history)
    a, b = load_checkpoint(tmp_path / "4.ckpt")["resume"], load_checkpoint(first)["resume"]
    assert a["samples_seen"] == b["samples_seen"] == 4 * len(small_digits.train)
    for key, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"])

    with pytest.raises(ValueError, match="already trained 4 epochs"):
        train_classifier(_config("digits_net_dropout", epochs=4, resume=str(first)), small_digits, progress=False)
    with pytest.raises(ValueError, match="holds digits_net_dropout"):
        train_classifier(_config("digits_net", epochs=6, resume=str(first)), small_digits, progress=False)
    from torchship.training import thermometer

    cfg = thermometer.ThermometerConfig(epochs=10)
    no_resume = thermometer.save_result(thermometer.train_linear(cfg, False), "thermometer_linear", cfg, tmp_path / "t")
    with pytest.raises(CheckpointError, match="no resume state"):
        train_classifier(_config("digits_net", epochs=6, resume=str(no_resume)), small_digits, progress=False)


def test_weights_files_of_the_book_and_torchvision_load(tmp_path: Path) -> None:
    source = models.get("net").build()
    state = source.state_dict()
    plain, book, wrapped = tmp_path / "birds_vs_airplanes.pt", tmp_path / "book.state", tmp_path / "ddp.pth"
    torch.save(state, plain)  # chapter 8 / torchvision: a plain state_dict
    torch.save({"model_state": state, "optimizer_state": {}, "epoch": 3}, book)  # chapters 11-13
    torch.save({f"module.{k}": v for k, v in state.items()}, wrapped)  # saved without unwrapping DDP
    for path in (plain, book, wrapped):
        target = models.get("net").build()
        assert load_weights(target, path) == []
        _assert_same_weights(target.state_dict(), state)

    with pytest.raises(FileNotFoundError, match=r"weights file .*missing\.pt not found"):
        read_state_dict(tmp_path / "missing.pt")
    ten_classes = models.get("digits_net").build()
    with pytest.raises(WeightsError, match=r"fc2\.weight \(2, 32\) vs \(10, 32\)"):
        load_weights(ten_classes, plain)
    skipped = load_weights(ten_classes, plain, partial=True)
    assert skipped == ["fc2.bias", "fc2.weight"]
    assert torch.equal(ten_classes.state_dict()["conv1.weight"], state["conv1.weight"])
    (tmp_path / "junk.pt").write_bytes(b"not torch")
    with pytest.raises(WeightsError, match="not a weights file"):
        read_state_dict(tmp_path / "junk.pt")


def test_training_starts_from_the_given_weights(tmp_path: Path, small_digits: ClassificationData) -> None:
    torch.manual_seed(123)
    start = models.get("digits_net").build().state_dict()
    torch.save(start, tmp_path / "start.pt")
    # Learning rate 0: the run must end exactly where the weights file began.
    cfg = _config("digits_net", epochs=1, learning_rate=0.0, weights=str(tmp_path / "start.pt"))
    result = train_classifier(cfg, small_digits, progress=False)
    _assert_same_weights(result.model.state_dict(), start)
    out = tmp_path / "x.ckpt"
    args = ["train", "digits-net", "--weights", str(tmp_path / "nope.pt"), "--out", str(out), "--tb-dir", ""]
    assert main(args) == 1 and not out.exists()


def test_cuda_request_without_a_gpu_is_an_error(small_digits: ClassificationData) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible; the error path is for machines without one")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        train_classifier(_config("digits_net", device="cuda"), small_digits, progress=False)


def test_thermometer_mlp_writes_its_loss_curve_and_beats_a_line(tmp_path: Path) -> None:
    out = tmp_path / "mlp.ckpt"
    assert main(["train", "thermometer-mlp", "--no-progress", "--out", str(out)]) == 0
    png = out.with_suffix(".loss.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    ckpt = load_checkpoint(out)
    assert ckpt["training"]["learning_rate"] == 1e-3 and ckpt["training"]["epochs"] == 5000
    loss = ckpt["metrics"]["train_loss"]
    # Book: 1.4900 after 5000 epochs from its random init. Any init that learned the curve fits the 11 readings
    # better than the best straight line can; a run stuck near the start would be far above it (book epoch 1: 207).
    assert math.isfinite(loss) and 0.0 < loss < BEST_LINEAR_MSE


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_recipe_and_option_explains_itself() -> None:
    train = _subparsers(build_parser())["train"]
    recipes = _subparsers(train)
    expected = {f"digits-{m}" for m in ("net", "net-width", "net-dropout", "net-batchnorm", "net-depth", "net-res")}
    expected |= {"cifar2-fc", "cifar2-fc-deep", "cifar2-net", "cifar2-net-res-deep", "thermometer-mlp"}
    assert expected <= recipes.keys()
    for name, recipe in recipes.items():
        for action in recipe._actions:
            assert action.help, f"train {name} {action.option_strings} has no help text"
    help_text = recipes["cifar2-net"].format_help()
    assert "cifar-10-python.tar.gz" in help_text and "torchrun" in help_text
    assert recipes["cifar2-net"].get_default("learning_rate") == 1e-2
    assert recipes["cifar2-net"].get_default("batch_size") == 64
    assert recipes["cifar2-net"].get_default("epochs") == 100
