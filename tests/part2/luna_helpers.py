"""Shared by the part 2 tests, which import it by name (pytest puts tests/part2 on sys.path), as server_helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from torchship.data.luna.synth import SynthConfig

# The smallest scans the crops allow: 32 slices of 64 x 64, a few candidates each.
TINY = SynthConfig(series=3, seed=7, shape=(32, 64, 64), ratio=4.0, nodules_per_series=2.0)


def write_mhd(
    folder: Path,
    uid: str,
    volume: np.ndarray,
    spacing_xyz: tuple[float, float, float] = (0.7, 0.8, 2.5),
    origin_xyz: tuple[float, float, float] = (-150.0, -170.5, -300.25),
    direction: tuple[int, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
) -> Path:
    """A MetaIO header written by hand (not by SimpleITK) and its int16 voxels, [index, row, col] order."""
    folder.mkdir(parents=True, exist_ok=True)
    depth, rows, cols = volume.shape
    header = "\n".join(
        [
            "ObjectType = Image",
            "NDims = 3",
            "BinaryData = True",
            "BinaryDataByteOrderMSB = False",
            "CompressedData = False",
            f"TransformMatrix = {' '.join(str(v) for v in direction)}",
            f"Offset = {' '.join(str(v) for v in origin_xyz)}",
            "CenterOfRotation = 0 0 0",
            "AnatomicalOrientation = RAI",
            f"ElementSpacing = {' '.join(str(v) for v in spacing_xyz)}",
            f"DimSize = {cols} {rows} {depth}",
            "ElementType = MET_SHORT",
            f"ElementDataFile = {uid}.raw",
        ]
    )
    (folder / f"{uid}.mhd").write_text(header + "\n")
    volume.astype("<i2").tofile(folder / f"{uid}.raw")
    return folder / f"{uid}.mhd"
