"""Calibration images offline: crops of scikit-learn's two bundled photographs (china.jpg, flower.jpg),
at several scales and positions, mirrored or not. Real photographs, so a classifier's answers vary
between them; labelled in the manifest as the directory they are written to."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_crops(directory: Path, count: int = 48, size: int = 256, seed: int = 0) -> list[Path]:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two uint8 [427, 640, 3] arrays
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
