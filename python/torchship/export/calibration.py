"""Calibration data for int8 export (docs/quantization.md): what the observers see, and held-out inputs.

A calibration source is named by the user:

- ``dataset``: the checkpoint's own data set (the registry's weights variant declares it: digits, CIFAR-2):
  calibration on training images, verification on the validation split, with labels (held-out accuracy).
- a directory of images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``): resized, centre-cropped and normalized
  as the model's ``preprocessing`` declares; the later part is held out.
- a ``.npy`` file ``[N, *input shape]``, already preprocessed; the later part is held out.
- ``random``: random inputs, only when asked, and labelled so in the manifest.

A source that does not fit the model's one float input is refused (ValueError) saying what fits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torchship.models.registry import TensorSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
CALIBRATION_SAMPLES = 128  # at most this many inputs go through the observers
HELD_OUT_SHARE = 0.5  # of a directory or .npy, the later half is never calibrated on
MIN_SAMPLES = 8


@dataclass(frozen=True)
class Calibration:
    """Inputs for the observers and held-out inputs (with labels when the source has them)."""

    source: str  # for the manifest: "dataset sklearn.datasets.load_digits (train split)", "random inputs", ...
    kind: str  # dataset | images | npy | random
    calibrate: torch.Tensor
    held_out: torch.Tensor
    labels: torch.Tensor | None = None

    def batches(self, size: int) -> list[torch.Tensor]:
        return list(self.calibrate.split(size))

    def manifest(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "calibration_samples": len(self.calibrate),
            "held_out_samples": len(self.held_out),
            "held_out_labelled": self.labels is not None,
        }


def _one_float_input(specs: Sequence[TensorSpec]) -> TensorSpec:
    if len(specs) != 1 or not specs[0].dtype.startswith("FP"):
        shown = ", ".join(f"{s.name} {s.dtype}" for s in specs)
        raise ValueError(f"int8 export calibrates models with one float input; this model takes {shown}")
    return specs[0]


def _check_shape(data: torch.Tensor, spec: TensorSpec, example: Sequence[int], what: str) -> torch.Tensor:
    want = (-1, *example[1:])
    if data.dim() != len(want) or tuple(data.shape[1:]) != tuple(example[1:]):
        raise ValueError(
            f"calibration {what} has shape {list(data.shape)}; input '{spec.name}' takes [N, "
            f"{', '.join(str(d) for d in example[1:])}] ({spec.dtype}, preprocessed as the model declares)"
        )
    if not data.is_floating_point():
        raise ValueError(f"calibration {what} holds {data.dtype} values; input '{spec.name}' takes {spec.dtype}")
    if len(data) < MIN_SAMPLES:
        raise ValueError(f"calibration {what} holds {len(data)} samples; at least {MIN_SAMPLES} are needed")
    if not torch.isfinite(data).all():
        raise ValueError(f"calibration {what} holds NaN or infinite values")
    return data.float()


def _split(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    held = max(1, int(len(data) * HELD_OUT_SHARE))
    return data[: len(data) - held][:CALIBRATION_SAMPLES], data[len(data) - held :]


def _images(directory: Path, example: Sequence[int], preprocessing: Mapping[str, Any]) -> torch.Tensor:
    """Every image in ``directory`` (sorted by name) as the model's preprocessing makes it."""
    from PIL import Image
    from torchvision.transforms import functional as F

    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"calibration directory {directory} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    channels, height, width = example[1:]
    if channels not in (1, 3):
        raise ValueError(f"calibration images: the model takes {channels} channels; give a .npy instead")
    norm = preprocessing.get("normalize", {})
    out = []
    for f in files:
        with Image.open(f) as img:
            img = img.convert("RGB" if channels == 3 else "L")
            resize = preprocessing.get("resize")
            size = resize if isinstance(resize, int) else min(height, width)
            t = F.center_crop(F.resize(F.pil_to_tensor(img), size, antialias=True), [height, width])
        t = t.float() / 255.0
        if norm:
            t = F.normalize(t, norm["mean"], norm["std"])
        out.append(t)
    return torch.stack(out)


def _dataset(checkpoint: Mapping[str, Any]) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]:
    from torchship import models
    from torchship.training import recipes

    entry = models.get(checkpoint["model"])
    if not entry.dataset:
        raise ValueError(
            f"model {checkpoint['model']!r} declares no data set; calibrate on a directory of images, a .npy or "
            "'random' (--calibration DIR|FILE.npy|random)"
        )
    try:
        dataset = recipes.get_dataset(entry.dataset)
    except (KeyError, ValueError) as e:
        raise ValueError(
            f"model {checkpoint['model']!r} names data set {entry.dataset!r}, which no recipe loads here ({e}); "
            "calibrate on a directory of images, a .npy or 'random' (--calibration DIR|FILE.npy|random)"
        ) from e
    described = (checkpoint.get("training") or {}).get("data", {})
    options = {o.name: o.type(described[o.name]) for o in dataset.options if o.name in described}
    try:
        data = dataset.load(entry, **options)
    except (OSError, FileNotFoundError) as e:
        raise ValueError(f"the checkpoint's data set {entry.dataset!r} cannot be loaded here: {e}") from e
    name = described.get("dataset", entry.dataset)
    return f"dataset {name}", data.train.images, data.val.images, data.val.labels


def load(
    spec: str | None,
    inputs: Sequence[TensorSpec],
    examples: Sequence[Sequence[int]],
    preprocessing: Mapping[str, Any] | None = None,
    checkpoint: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> Calibration:
    """The calibration named by ``spec`` (default: the checkpoint's data set) for a model with ``inputs``."""
    spec_ = _one_float_input(inputs)
    example = examples[0]
    if spec in (None, "", "dataset"):
        if checkpoint is None:
            raise ValueError(
                "int8 export needs calibration data: --calibration dataset (a checkpoint's own data set), "
                "a directory of images, a .npy file, or 'random' (random inputs, labelled so)"
            )
        source, train, val, labels = _dataset(checkpoint)
        train = _check_shape(train, spec_, example, "data set")[:CALIBRATION_SAMPLES]
        g = torch.Generator().manual_seed(seed)
        train = train[torch.randperm(len(train), generator=g)][:CALIBRATION_SAMPLES]
        val = _check_shape(val, spec_, example, "data set")
        return Calibration(f"{source} (train split; held out: validation split)", "dataset", train, val, labels)
    if spec == "random":
        g = torch.Generator().manual_seed(seed)
        data = torch.randn(2 * 32, *example[1:], generator=g)
        cal, held = _split(data)
        return Calibration("random inputs (standard normal; no data named)", "random", cal, held)
    path = Path(spec)
    if path.is_dir():
        data = _check_shape(_images(path, example, preprocessing or {}), spec_, example, f"images in {path}")
        cal, held = _split(data)
        return Calibration(f"images in {path} ({len(data)} files, sorted by name)", "images", cal, held)
    if path.suffix == ".npy":
        import numpy as np

        if not path.is_file():
            raise ValueError(f"calibration file {path} does not exist")
        data = _check_shape(torch.from_numpy(np.load(path, allow_pickle=False)), spec_, example, f"file {path}")
        cal, held = _split(data)
        return Calibration(f"array {path} ({len(data)} samples)", "npy", cal, held)
    raise ValueError(
        f"calibration source {spec!r} is neither 'dataset', 'random', a directory of images nor a .npy file"
    )


def write_sample_crops(directory: Path, count: int = 48, size: int = 256, seed: int = 0) -> list[Path]:
    """Calibration images offline: ``count`` crops of scikit-learn's two bundled photographs (china.jpg,
    flower.jpg) at several scales and positions, some mirrored, as PNG files in ``directory``. Real
    photographs, so a classifier's answers vary between them (ImageNet models have no data set here)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two uint8 [427, 640, 3] arrays
    import numpy as np

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(rng.integers(size // 2, min(h, w)))
        top, left = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = directory / f"crop_{i:03d}.png"
        crop.save(path)
        written.append(path)
    return written
