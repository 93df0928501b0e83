"""The generated LUNA layout: deterministic, in LUNA's format, with the documented structure.

Run: .venv/bin/python -m pytest tests/part2/test_synth.py -q
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from luna_helpers import TINY

from torchship.data.luna.ct import Ct
from torchship.data.luna.layout import LunaLayout
from torchship.data.luna.synth import SynthConfig, generate_series, write_dataset


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.*"))}


def test_same_seed_same_bytes(tmp_path: Path, tiny_luna: Path) -> None:
    write_dataset(TINY, tmp_path / "again", log=lambda _: None)
    assert _digest(tmp_path / "again") == _digest(tiny_luna)
    other = SynthConfig(series=1, seed=TINY.seed + 1, shape=TINY.shape, ratio=TINY.ratio)
    assert generate_series(other, 0)[1].tobytes() != generate_series(TINY, 0)[1].tobytes()


def test_layout_and_files_are_lunas(tiny_luna: Path) -> None:
    layout = LunaLayout(tiny_luna)
    assert len(layout.series_paths) == 3
    with open(layout.candidates_csv) as f:
        assert f.readline().strip() == "seriesuid,coordX,coordY,coordZ,class"
    with open(layout.annotations_csv) as f:
        assert f.readline().strip() == "seriesuid,coordX,coordY,coordZ,diameter_mm"
    assert layout.malignancy_csv is not None


def test_scans_look_like_chest_ct(tiny_luna: Path) -> None:
    layout = LunaLayout(tiny_luna)
    with open(tiny_luna / "synth_nodules.csv") as f:
        truth = list(csv.DictReader(f))
    assert truth, "the tiny set has nodules"
    spacings = set()
    for uid, mhd in layout.series_paths.items():
        ct = Ct(uid, mhd)
        spacings.add(ct.vx_size_xyz)
        assert ct.vx_size_xyz[2] > ct.vx_size_xyz[0]  # thicker slices than pixels: anisotropic
        assert ct.origin_xyz != (0.0, 0.0, 0.0)
        hu = ct.hu_a
        assert np.median(hu[:, :3, :3]) < -950  # air in the corners
        assert np.median(hu[:, 32, :]) > -900  # the middle row crosses body and lungs
        lungish = (hu > -950) & (hu < -750)
        assert 0.1 < lungish.mean() < 0.6
    assert len(spacings) == 3  # every series has its own spacing
    for row in truth:
        ct = Ct(row["seriesuid"], layout.mhd_path(row["seriesuid"]))
        center = ct.xyz2irc((float(row["coordX"]), float(row["coordY"]), float(row["coordZ"])))
        assert ct.hu_a[center] > -500, "a nodule's centre is dense"
        assert 3.0 <= float(row["diameter_mm"]) <= 30.0


def test_flipped_direction_and_imbalance() -> None:
    cfg = SynthConfig(series=6, seed=0, shape=(32, 64, 64), ratio=50.0, nodules_per_series=1.0)
    directions = [generate_series(cfg, i)[0]["direction"][0] for i in range(6)]
    assert -1.0 in directions and 1.0 in directions
    _, _, _, negatives = generate_series(cfg, 0)
    assert len(negatives) == 50


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"series": 0}, "series must be at least 1"),
        ({"shape": (16, 64, 64)}, "too small"),
        ({"shape": (512, 512, 512)}, "over 64 Mi voxels"),
        ({"ratio": -1.0}, "cannot be negative"),
    ],
)
def test_bad_configs_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SynthConfig(**kwargs)
