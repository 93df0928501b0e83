"""LUNA16 loading: MetaIO through SimpleITK, coordinates, CSV rules, crops, the crop cache.

Run: .venv/bin/python -m pytest tests/part2/test_loading.py -q
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from luna_helpers import write_mhd

from torchship.data.luna.cache import CropCache, CtSource
from torchship.data.luna.candidates import (
    CandidateInfoTuple,
    candidate_info_list,
    malignancy_candidates,
    merge_candidates,
    read_annotations,
    read_candidates,
)
from torchship.data.luna.ct import Ct
from torchship.data.luna.geometry import UnsupportedDirectionError, XyzTuple, xyz2irc, xyz2irc_float
from torchship.data.luna.layout import LunaDataError, LunaLayout

FLIPPED = (-1, 0, 0, 0, -1, 0, 0, 0, 1)
UID = "1.2.3.4"


def _volume(shape: tuple[int, int, int] = (40, 60, 70)) -> np.ndarray:
    """Every voxel's value encodes its index, so a crop can be checked against the volume."""
    i, r, c = np.indices(shape)
    return (i * 7 + r * 3 + c - 900).astype(np.int16)


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), FLIPPED])
def test_coordinates_match_simpleitk(tmp_path: Path, direction: tuple[int, ...]) -> None:
    """irc2xyz / xyz2irc against SimpleITK's own index <-> physical point transforms."""
    mhd = write_mhd(tmp_path, UID, _volume(), direction=direction)
    image = sitk.ReadImage(str(mhd))
    ct = Ct(UID, mhd)
    rng = np.random.default_rng(0)
    for _ in range(20):
        irc = tuple(float(v) for v in rng.uniform(0, 39, size=3))
        expected = image.TransformContinuousIndexToPhysicalPoint(
            irc[::-1]
        )  # SimpleITK index order is (col, row, index)
        got = ct.irc2xyz(irc)
        np.testing.assert_allclose(got, expected, atol=1e-9)
        np.testing.assert_allclose(xyz2irc_float(got, ct.origin_xyz, ct.vx_size_xyz, ct.direction), irc, atol=1e-9)
        rounded = ct.xyz2irc(expected)
        assert rounded[::-1] == image.TransformPhysicalPointToIndex(expected)


def test_flipped_direction_runs_x_and_y_backwards(tmp_path: Path) -> None:
    ct = Ct(UID, write_mhd(tmp_path, UID, _volume(), direction=FLIPPED))
    x0, y0, z0 = ct.irc2xyz((0, 0, 0))
    x1, y1, z1 = ct.irc2xyz((1, 1, 1))
    assert (x1 - x0, y1 - y0, z1 - z0) == pytest.approx((-0.7, -0.8, 2.5))


@pytest.mark.parametrize(
    "direction", [(1, 0, 0, 0, 1, 0, 0, 0, -1), (0, 1, 0, 1, 0, 0, 0, 0, 1), (0.96, 0.28, 0, -0.28, 0.96, 0, 0, 0, 1)]
)
def test_other_directions_are_refused_by_name(tmp_path: Path, direction: tuple[float, ...]) -> None:
    mhd = write_mhd(tmp_path, UID, _volume(), direction=direction)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedDirectionError, match=r"direction matrix .* is not supported"):
        Ct(UID, mhd)
    with pytest.raises(UnsupportedDirectionError):
        xyz2irc((0, 0, 0), (0, 0, 0), (1, 1, 1), direction)


def test_hu_is_clipped_to_minus_1000_plus_1000(tmp_path: Path) -> None:
    volume = np.zeros((4, 5, 6), dtype=np.int16)
    volume[0, 0, 0], volume[1, 1, 1], volume[2, 2, 2] = -3024, 3071, 123
    ct = Ct(UID, write_mhd(tmp_path, UID, volume))
    assert ct.hu_a.dtype == np.float32
    assert (ct.hu_a[0, 0, 0], ct.hu_a[1, 1, 1], ct.hu_a[2, 2, 2]) == (-1000.0, 1000.0, 123.0)


def test_missing_and_malformed_files_are_named(tmp_path: Path) -> None:
    mhd = write_mhd(tmp_path, UID, _volume((4, 5, 6)))
    mhd.with_suffix(".raw").unlink()
    with pytest.raises(LunaDataError, match=r"names its voxel file 1\.2\.3\.4\.raw, which is missing"):
        Ct(UID, mhd)
    bad = tmp_path / "bad.mhd"
    bad.write_text("this is not MetaIO\n")
    with pytest.raises(LunaDataError, match="not a MetaIO header: DimSize is None"):
        Ct("bad", bad)
    bad.write_text("DimSize = 4 5 6\n")
    with pytest.raises(LunaDataError, match="no ElementDataFile"):
        Ct("bad", bad)
    # Hostile: a header promising 10^15 voxels is refused before anything is allocated.
    huge = tmp_path / "huge.mhd"
    huge.write_text(mhd.read_text().replace("DimSize = 6 5 4", "DimSize = 100000 100000 100000"))
    with pytest.raises(LunaDataError, match="exceeds 1073741824 voxels"):
        Ct("huge", huge)
    short = write_mhd(tmp_path / "short", UID, _volume((4, 5, 6)))
    short.with_suffix(".raw").write_bytes(b"\0" * 10)  # far fewer bytes than the header promises
    with pytest.raises(LunaDataError, match="SimpleITK cannot read"):
        Ct(UID, short)
    with pytest.raises(LunaDataError, match="does not exist"):
        LunaLayout(tmp_path / "nowhere")
    with pytest.raises(LunaDataError, match=r"candidates\.csv is missing"):
        LunaLayout(tmp_path).candidates_csv  # noqa: B018 (the property raises)
    with pytest.raises(LunaDataError, match=r"has no \.mhd file"):
        LunaLayout(tmp_path).mhd_path("9.9.9")


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_errors_name_file_and_line(tmp_path: Path) -> None:
    header = "seriesuid,coordX,coordY,coordZ,class\n"
    with pytest.raises(LunaDataError, match=r"c1\.csv:3: coordY is 'abc', not a number"):
        read_candidates(_csv(tmp_path / "c1.csv", header + "1.2,1,2,3,0\n1.2,1,abc,3,1\n"))
    with pytest.raises(LunaDataError, match=r"c2\.csv:2: class is '2', expected 0 or 1"):
        read_candidates(_csv(tmp_path / "c2.csv", header + "1.2,1,2,3,2\n"))
    with pytest.raises(LunaDataError, match=r"lacks \['class'\]"):
        read_candidates(_csv(tmp_path / "c3.csv", "seriesuid,coordX,coordY,coordZ\n1.2,1,2,3\n"))
    with pytest.raises(LunaDataError, match="not a finite number"):
        read_candidates(_csv(tmp_path / "c4.csv", header + "1.2,nan,2,3,0\n"))
    with pytest.raises(LunaDataError, match=r"diameter_mm is -4\.0, must be positive"):
        read_annotations(_csv(tmp_path / "a.csv", "seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2,1,2,3,-4\n"))
    with pytest.raises(LunaDataError, match="mal_bool is 'yes'"):
        read_annotations(
            _csv(tmp_path / "m.csv", "seriesuid,coordX,coordY,coordZ,diameter_mm,mal_bool\n1.2,1,2,3,4,yes\n"),
            with_malignancy=True,
        )


def test_merging_rule_quarter_diameter_on_every_axis() -> None:
    """The book's rule: the first annotation within diameter / 4 on each axis gives its diameter; else 0.0."""
    annotations = [
        ("s1", XyzTuple(0.0, 0.0, 0.0), 8.0, False),  # tolerance 2.0 mm per axis
        ("s1", XyzTuple(50.0, 0.0, 0.0), 20.0, True),  # tolerance 5.0 mm
        ("s2", XyzTuple(0.0, 0.0, 0.0), 30.0, False),
    ]
    candidates = [
        ("s1", XyzTuple(2.0, -2.0, 1.9), True),  # on the boundary of the first: matches (<=)
        ("s1", XyzTuple(2.01, 0.0, 0.0), True),  # just outside on x
        ("s1", XyzTuple(1.0, 1.0, 2.5), False),  # z off by 2.5 > 2.0
        ("s1", XyzTuple(46.0, 4.0, -4.9), False),  # the second annotation
        ("s3", XyzTuple(0.0, 0.0, 0.0), True),  # another series: nothing to match
    ]
    merged = merge_candidates(candidates, annotations)
    by_center = {c.center_xyz: c for c in merged}
    assert by_center[(2.0, -2.0, 1.9)].diameter_mm == 8.0
    assert by_center[(2.01, 0.0, 0.0)].diameter_mm == 0.0
    assert by_center[(1.0, 1.0, 2.5)].diameter_mm == 0.0
    assert by_center[(46.0, 4.0, -4.9)].diameter_mm == 20.0 and by_center[(46.0, 4.0, -4.9)].is_mal
    assert by_center[(0.0, 0.0, 0.0)].diameter_mm == 0.0
    # sort(reverse=True): nodules first, annotated first among them, larger first.
    assert [(c.is_nodule, c.diameter_mm) for c in merged] == [
        (True, 8.0),
        (True, 0.0),
        (True, 0.0),
        (False, 20.0),
        (False, 0.0),
    ]


def test_chapter14_rule_takes_nodules_from_the_malignancy_file() -> None:
    annotations = [("s1", XyzTuple(1.0, 2.0, 3.0), 12.0, True), ("s1", XyzTuple(9.0, 9.0, 9.0), 5.0, False)]
    candidates = [("s1", XyzTuple(1.1, 2.0, 3.0), True), ("s1", XyzTuple(-5.0, 0.0, 0.0), False)]
    got = malignancy_candidates(candidates, annotations)
    assert got == [
        CandidateInfoTuple(True, True, True, 12.0, "s1", XyzTuple(1.0, 2.0, 3.0)),
        CandidateInfoTuple(True, True, False, 5.0, "s1", XyzTuple(9.0, 9.0, 9.0)),
        CandidateInfoTuple(False, False, False, 0.0, "s1", XyzTuple(-5.0, 0.0, 0.0)),
    ]


def test_candidate_list_keeps_series_on_disk(tiny_luna: Path) -> None:
    layout = LunaLayout(tiny_luna)
    on_disk = candidate_info_list(layout, rule="chapter12")
    everything = candidate_info_list(layout, rule="chapter12", require_on_disk=False)
    assert on_disk == everything  # every generated series is on disk
    assert {c.series_uid for c in on_disk} == set(layout.series_paths)
    with pytest.raises(ValueError, match="candidate rule"):
        candidate_info_list(layout, rule="chapter99")


@pytest.mark.parametrize(
    ("center_irc", "start_irc"),
    [
        ((20, 30, 35), (4, 6, 11)),  # inside: round(centre - width / 2)
        ((1, 2, 3), (0, 0, 0)),  # near the low edges: shifted in
        ((39, 59, 69), (8, 12, 22)),  # near the high edges: ends at the last voxel
    ],
)
def test_crops_are_blocks_of_the_volume(
    tmp_path: Path, center_irc: tuple[int, int, int], start_irc: tuple[int, int, int]
) -> None:
    volume = _volume()
    ct = Ct(UID, write_mhd(tmp_path, UID, volume, direction=FLIPPED))
    chunk, got_center = ct.get_raw_candidate(ct.irc2xyz(center_irc), (32, 48, 48))
    assert got_center == center_irc and chunk.shape == (32, 48, 48)
    i, r, c = start_irc
    np.testing.assert_array_equal(chunk, volume[i : i + 32, r : r + 48, c : c + 48].astype(np.float32))


def test_crop_errors(tmp_path: Path) -> None:
    ct = Ct(UID, write_mhd(tmp_path, UID, _volume()))
    with pytest.raises(LunaDataError, match=r"lies outside the CT of shape \[40, 60, 70\]"):
        ct.get_raw_candidate(ct.irc2xyz((40, 0, 0)), (32, 48, 48))
    with pytest.raises(LunaDataError, match="larger than the CT"):
        ct.get_raw_candidate(ct.irc2xyz((10, 10, 10)), (64, 48, 48))


def test_cache_hits_misses_and_invalidation(tmp_path: Path) -> None:
    data = tmp_path / "luna"
    mhd = write_mhd(data / "subset0", UID, _volume())
    source = CtSource(LunaLayout(data))
    cache = CropCache(source, tmp_path / "cache")
    center = source.ct(UID).irc2xyz((20, 30, 35))
    first, _ = cache.get(UID, center, (32, 48, 48))
    second, irc = cache.get(UID, center, (32, 48, 48))
    assert (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first, second)
    assert irc == (20, 30, 35)
    cache.get(UID, center, (16, 24, 24))  # another size is another entry
    assert (cache.hits, cache.misses) == (1, 2)
    # A new process finds the crop on disk.
    reopened = CropCache(CtSource(LunaLayout(data)), tmp_path / "cache")
    reopened.get(UID, center, (32, 48, 48))
    assert (reopened.hits, reopened.misses) == (1, 0)
    # Rewriting the scan changes its fingerprint: the old crop is not served.
    write_mhd(data / "subset0", UID, _volume() + 1)
    raw = mhd.with_suffix(".raw")
    os.utime(raw, ns=(raw.stat().st_atime_ns, raw.stat().st_mtime_ns + 10**9))
    fresh_source = CtSource(LunaLayout(data))
    fresh = CropCache(fresh_source, tmp_path / "cache")
    chunk, _ = fresh.get(UID, center, (32, 48, 48))
    assert (fresh.hits, fresh.misses) == (0, 1)
    np.testing.assert_array_equal(chunk, first + 1)
    for c in (cache, reopened, fresh):
        c.close()
