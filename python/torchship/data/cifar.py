"""CIFAR-10 from a local copy, and chapter 7's CIFAR-2 (airplanes vs birds).

Nothing is downloaded at run time: the user extracts the official "CIFAR-10
python version" archive once, and this module reads its pickled batches.
The batches are read with an unpickler that only rebuilds NumPy arrays, so a
tampered file cannot run code.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import numpy._core as np_core
import torch

from torchship.data.images import ImageSplit

BATCH_DIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
ARCHIVE = "cifar-10-python.tar.gz"
URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Chapter 7: keep airplanes (0) and birds (2), relabelled 0 and 1.
CIFAR2_LABEL_MAP = {0: 0, 2: 1}
CIFAR2_CLASSES = ("airplane", "bird")
# Chapter 7's per-channel statistics of the CIFAR-10 training set, after ToTensor (values in [0, 1]).
MEAN = (0.4915, 0.4823, 0.4468)
STD = (0.2470, 0.2435, 0.2616)


class DataNotFoundError(FileNotFoundError):
    """The data set is not on disk; the message says what to download and where to put it."""


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds the dicts of NumPy arrays in CIFAR batches and refuses any other global."""

    def find_class(self, module: str, name: str) -> Any:
        # The official files were written by Python 2 NumPy (numpy.core); NumPy 2 calls it numpy._core.
        key = (module.replace("numpy._core.", "numpy.core."), name)
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): np_core.multiarray._reconstruct,
            ("numpy.core.numeric", "_frombuffer"): np_core.numeric._frombuffer,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): codecs.encode,  # bytes keys pickled by Python 3 at protocol 2
        }
        if key not in allowed:
            raise pickle.UnpicklingError(f"CIFAR batch refers to {module}.{name}, which a data file never needs")
        return allowed[key]


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = _ArrayUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a CIFAR-10 python batch (no b'data'/b'labels'): {e}") from e
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(f"{path}: expected data [N, 3072] and N labels, got {data.shape} and {labels.shape}")
    return data, labels


def locate(data_dir: str | Path) -> Path:
    """The ``cifar-10-batches-py`` folder under ``data_dir`` (or ``data_dir`` itself), or a clear error."""
    data_dir = Path(data_dir)
    for candidate in (data_dir / BATCH_DIR, data_dir):
        if all((candidate / f).is_file() for f in (*TRAIN_FILES, TEST_FILE)):
            return candidate
    raise DataNotFoundError(
        f"CIFAR-10 not found: expected {data_dir / BATCH_DIR}/data_batch_1..5 and test_batch. "
        f"Download the CIFAR-10 python version ({ARCHIVE}) from {URL} and extract it with "
        f"`tar xzf {ARCHIVE} -C {data_dir}`, or pass --data-dir pointing at the folder that contains {BATCH_DIR}/. "
        "Nothing is downloaded at run time."
    )


def load_cifar10(data_dir: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw CIFAR-10: uint8 images ``[N, 3, 32, 32]`` (planar RGB, as stored) and int64 labels."""
    folder = locate(data_dir)
    parts = [_read_batch(folder / f) for f in (TRAIN_FILES if train else (TEST_FILE,))]
    data = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(data), torch.from_numpy(labels)


def normalize(images: torch.Tensor, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD) -> torch.Tensor:
    """``ToTensor()`` then ``Normalize(mean, std)``: uint8 ``[N, 3, H, W]`` -> float32."""
    x = images.to(torch.float32) / 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - m) / s


def cifar2(
    data_dir: str | Path,
    train: bool,
    mean: tuple[float, ...] = MEAN,
    std: tuple[float, ...] = STD,
    label_map: dict[int, int] | None = None,
) -> ImageSplit:
    """Chapter 7's CIFAR-2: airplanes and birds only, labels remapped ``{0: 0, 2: 1}``, normalized."""
    label_map = CIFAR2_LABEL_MAP if label_map is None else label_map
    images, labels = load_cifar10(data_dir, train)
    keep = torch.isin(labels, torch.tensor(sorted(label_map)))
    lut = torch.full((len(CLASSES),), -1, dtype=torch.int64)
    for src, dst in label_map.items():
        lut[src] = dst
    return ImageSplit(normalize(images[keep], mean, std), lut[labels[keep]])
