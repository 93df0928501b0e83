"""Run: .venv/bin/python -m pytest tests/unit/test_data.py -q

CIFAR-10/CIFAR-2 loading from files in the official python-pickle layout
(written here, tiny), and the scikit-learn digits split.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from torchship.cli import main
from torchship.data import cifar
from torchship.data.digits import digits, load_digits_pixels
from torchship.data.images import stratified_split
from torchship.models.cifar import digits_to_images
from torchship.training.image_recipes import cifar2_data

# Labels per file: every class appears, airplanes (0) and birds (2) in several files.
TRAIN_LABELS = [[0, 1, 2, 3], [2, 4, 5, 0], [6, 7, 8, 9], [0, 0, 2, 1], [9, 2, 3, 0]]
TEST_LABELS = [2, 0, 5, 2, 9]


def _images(labels: list[int], offset: int) -> np.ndarray:
    """Deterministic pixels; each row is 1024 R, 1024 G, 1024 B values (row-major 32x32), as CIFAR stores them."""
    n = len(labels)
    return ((np.arange(n * 3072, dtype=np.int64) * 7 + offset) % 256).astype(np.uint8).reshape(n, 3072)


def _write_batch(path: Path, data: np.ndarray, labels: list[int], python2_numpy: bool = False) -> None:
    batch = {b"batch_label": b"test batch", b"labels": labels, b"data": data, b"filenames": [b"x.png"] * len(labels)}
    raw = pickle.dumps(batch, protocol=2)
    if python2_numpy:  # the official files name NumPy's internals numpy.core (Python 2 era)
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"numpy.core.multiarray" in raw
    path.write_bytes(raw)


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    folder = tmp_path / cifar.BATCH_DIR
    folder.mkdir()
    for i, labels in enumerate(TRAIN_LABELS, start=1):
        _write_batch(folder / f"data_batch_{i}", _images(labels, i), labels, python2_numpy=(i == 1))
    _write_batch(folder / "test_batch", _images(TEST_LABELS, 99), TEST_LABELS)
    return tmp_path


def test_cifar10_loads_every_batch_in_planar_rgb(cifar_dir: Path) -> None:
    images, labels = cifar.load_cifar10(cifar_dir, train=True)
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [label for labels in TRAIN_LABELS for label in labels]
    first = _images(TRAIN_LABELS[0], 1)
    # Row 0: channel G (second 1024 values), pixel (row 5, column 7).
    assert int(images[0, 1, 5, 7]) == int(first[0, 1024 + 5 * 32 + 7])
    test_images, test_labels = cifar.load_cifar10(cifar_dir, train=False)
    assert test_images.shape == (5, 3, 32, 32) and test_labels.tolist() == TEST_LABELS


def test_cifar2_keeps_airplanes_and_birds_remapped_and_normalized(cifar_dir: Path) -> None:
    train = cifar.cifar2(cifar_dir, train=True)
    all_labels = [label for labels in TRAIN_LABELS for label in labels]
    kept = [i for i, label in enumerate(all_labels) if label in (0, 2)]
    assert train.labels.tolist() == [{0: 0, 2: 1}[all_labels[i]] for i in kept]
    raw, _ = cifar.load_cifar10(cifar_dir, train=True)
    # ToTensor then Normalize((0.4915, 0.4823, 0.4468), (0.2470, 0.2435, 0.2616)), pixel by pixel.
    for j, i in enumerate(kept):
        for c, (mean, std) in enumerate([(0.4915, 0.2470), (0.4823, 0.2435), (0.4468, 0.2616)]):
            for y, x in [(0, 0), (5, 7), (31, 31)]:
                expected = (int(raw[i, c, y, x]) / 255.0 - mean) / std
                assert float(train.images[j, c, y, x]) == pytest.approx(expected, abs=1e-6)
    assert train.images.dtype == torch.float32
    val = cifar.cifar2(cifar_dir, train=False)
    assert val.labels.tolist() == [1, 0, 1]


def test_cifar2_recipe_data_follows_the_models_preprocessing(cifar_dir: Path) -> None:
    data = cifar2_data("net", cifar_dir)
    assert data.classes == ("airplane", "bird")
    assert (len(data.train), len(data.val)) == (9, 3)
    assert data.description["normalize"] == {"mean": list(cifar.MEAN), "std": list(cifar.STD)}


def test_missing_cifar_names_the_download_and_the_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(cifar.DataNotFoundError) as info:
        cifar.load_cifar10(tmp_path, train=True)
    message = str(info.value)
    assert "cifar-10-python.tar.gz" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message
    assert str(tmp_path / "cifar-10-batches-py") in message
    out = tmp_path / "never.ckpt"
    args = ["train", "cifar2-net", "--data-dir", str(tmp_path), "--out", str(out), "--tb-dir", ""]
    assert main(args) == 1
    assert "cifar-10-python.tar.gz" in capsys.readouterr().err
    assert not out.exists()


def test_a_batch_that_would_run_code_is_refused(cifar_dir: Path, tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo pwned",))

    folder = cifar_dir / cifar.BATCH_DIR
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="never needs"):
        cifar.load_cifar10(cifar_dir, train=True)


def test_a_foreign_pickle_is_a_clear_error(cifar_dir: Path) -> None:
    (cifar_dir / cifar.BATCH_DIR / "test_batch").write_bytes(pickle.dumps({b"rows": [1, 2]}, protocol=2))
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        cifar.load_cifar10(cifar_dir, train=False)


def test_stratified_split_is_seeded_disjoint_and_per_class() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 10)
    train, val = stratified_split(labels, 0.2, seed=3)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(90))
    assert [int((labels[val] == c).sum()) for c in range(3)] == [10, 6, 2]
    again = stratified_split(labels, 0.2, seed=3)
    assert torch.equal(again[0], train) and torch.equal(again[1], val)
    assert not torch.equal(stratified_split(labels, 0.2, seed=4)[1], val)
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(labels, 1.0, seed=0)


def test_digits_split_and_preprocessing() -> None:
    pixels, labels = load_digits_pixels()
    assert pixels.shape == (1797, 8, 8) and float(pixels.max()) == 16.0
    data = digits(val_fraction=0.2, split_seed=0)
    assert (len(data.train), len(data.val)) == (1438, 359)
    assert data.train.images.shape == (1438, 3, 32, 32)
    assert data.classes == tuple(str(d) for d in range(10))
    # Every class keeps about a fifth of its images for validation.
    for c in range(10):
        share = int((data.val.labels == c).sum()) / int((labels == c).sum())
        assert share == pytest.approx(0.2, abs=0.01)
    # The images are the registry's preprocessing applied to the raw pixels: find each one in the full set.
    full = digits_to_images(pixels)
    flat_full = full.reshape(len(full), -1)
    for image, label in zip(data.val.images[:20], data.val.labels[:20], strict=True):
        match = torch.nonzero((flat_full == image.reshape(1, -1)).all(dim=1)).flatten()
        assert len(match) >= 1 and int(labels[match[0]]) == int(label)


def test_cifar2_recipe_trains_from_local_files_and_book_weights(cifar_dir: Path, tmp_path: Path) -> None:
    from torchship import models
    from torchship.training.checkpoint import load_checkpoint

    # The book's chapter 8 file: a plain state_dict of Net (birds_vs_airplanes.pt).
    book = models.get("net").build().state_dict()
    torch.save(book, tmp_path / "birds_vs_airplanes.pt")
    out = tmp_path / "net.ckpt"
    args = ["train", "cifar2-net", "--data-dir", str(cifar_dir), "--epochs", "1", "--lr", "0", "--device", "cpu"]
    args += ["--weights", str(tmp_path / "birds_vs_airplanes.pt"), "--out", str(out), "--tb-dir", "", "--no-progress"]
    assert main(args) == 0
    ckpt = load_checkpoint(out)
    assert ckpt["labels"] == ["airplane", "bird"]
    assert ckpt["preprocessing"]["normalize"] == {"mean": list(cifar.MEAN), "std": list(cifar.STD)}
    assert ckpt["training"]["data"]["train_samples"] == 9 and ckpt["training"]["learning_rate"] == 0.0
    for key, value in book.items():  # lr 0: the run ends exactly at the book's weights
        assert torch.equal(ckpt["state_dict"][key], value), key
    # Chapter 7's fully connected model takes the same images (it flattens them itself).
    fc = tmp_path / "fc.ckpt"
    args = ["train", "cifar2-fc", "--data-dir", str(cifar_dir), "--epochs", "1", "--device", "cpu", "--tb-dir", ""]
    assert main([*args, "--out", str(fc), "--no-progress"]) == 0
    assert load_checkpoint(fc)["state_dict"]["0.weight"].shape == (512, 3072)
