"""The candidate list: which points of which scans to classify, with label, diameter and malignancy.

Two rules, as the two editions of the book build the list:

- chapters 10-12 (``merge_candidates``): every row of ``candidates.csv`` is a
  candidate, ``class`` 1 = nodule (the early-access text read it as "malignant").
  Its diameter comes from the first ``annotations.csv`` row of the same series
  whose centre is within diameter / 4 of it on *every* axis (the two files'
  coordinates differ slightly); no such row -> 0.0 mm.
- chapter 14 (``malignancy_candidates``): nodules are the rows of
  ``annotations_with_malignancy.csv`` (annotated, with diameter and the LIDC
  malignancy flag); non-nodules are the ``class`` 0 rows of ``candidates.csv``.

Both lists sort descending, as the book's ``sort(reverse=True)``: nodules first,
largest first. Only series whose ``.mhd`` is on disk are kept unless asked.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from torchship.data.luna.geometry import XyzTuple
from torchship.data.luna.layout import LunaDataError, LunaLayout


class CandidateInfoTuple(NamedTuple):
    is_nodule: bool
    has_annotation: bool
    is_mal: bool
    diameter_mm: float
    series_uid: str
    center_xyz: XyzTuple


class _Reader:
    """Rows of one CSV by header name, with errors that name the file and line."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path = path
        self.columns = columns

    def rows(self) -> Iterable[tuple[int, dict[str, str]]]:
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in self.columns if c not in (reader.fieldnames or [])]
            if missing:
                raise LunaDataError(
                    f"{self.path}: header {reader.fieldnames} lacks {missing} (expected {','.join(self.columns)})"
                )
            for line, row in enumerate(reader, start=2):
                if any(row.get(c) in (None, "") for c in self.columns):
                    raise LunaDataError(f"{self.path}:{line}: a value is missing in {row}")
                yield line, row

    def number(self, line: int, row: dict[str, str], column: str) -> float:
        try:
            value = float(row[column])
        except ValueError:
            raise LunaDataError(f"{self.path}:{line}: {column} is {row[column]!r}, not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise LunaDataError(f"{self.path}:{line}: {column} is {row[column]!r}, not a finite number")
        return value

    def center(self, line: int, row: dict[str, str]) -> XyzTuple:
        return XyzTuple(*(self.number(line, row, c) for c in ("coordX", "coordY", "coordZ")))


def read_candidates(path: Path) -> list[tuple[str, XyzTuple, bool]]:
    """``candidates.csv``: (series_uid, centre, is_nodule)."""
    reader = _Reader(path, ("seriesuid", "coordX", "coordY", "coordZ", "class"))
    out = []
    for line, row in reader.rows():
        if row["class"] not in ("0", "1"):
            raise LunaDataError(f"{path}:{line}: class is {row['class']!r}, expected 0 or 1")
        out.append((row["seriesuid"], reader.center(line, row), row["class"] == "1"))
    return out


def read_annotations(path: Path, with_malignancy: bool = False) -> list[tuple[str, XyzTuple, float, bool]]:
    """``annotations.csv`` (or the chapter 14 file): (series_uid, centre, diameter_mm, is_mal)."""
    columns = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm") + (("mal_bool",) if with_malignancy else ())
    reader = _Reader(path, columns)
    out = []
    for line, row in reader.rows():
        diameter = reader.number(line, row, "diameter_mm")
        if diameter <= 0:
            raise LunaDataError(f"{path}:{line}: diameter_mm is {diameter}, must be positive")
        is_mal = False
        if with_malignancy:
            if row["mal_bool"] not in ("True", "False"):
                raise LunaDataError(f"{path}:{line}: mal_bool is {row['mal_bool']!r}, expected True or False")
            is_mal = row["mal_bool"] == "True"
        out.append((row["seriesuid"], reader.center(line, row), diameter, is_mal))
    return out


def matching_annotation(
    center_xyz: tuple[float, float, float], annotations: list[tuple[XyzTuple, float, bool]]
) -> tuple[XyzTuple, float, bool] | None:
    """The book's merging rule: the first annotation within diameter / 4 mm on every axis."""
    for annotation in annotations:
        annotation_xyz, diameter_mm, _ = annotation
        if all(abs(c - a) <= diameter_mm / 4 for c, a in zip(center_xyz, annotation_xyz, strict=True)):
            return annotation
    return None


def merge_candidates(
    candidates: list[tuple[str, XyzTuple, bool]], annotations: list[tuple[str, XyzTuple, float, bool]]
) -> list[CandidateInfoTuple]:
    """Chapters 10-12: every candidate, with the diameter of its matching annotation (0.0 when none)."""
    by_series: dict[str, list[tuple[XyzTuple, float, bool]]] = {}
    for uid, xyz, diameter, is_mal in annotations:
        by_series.setdefault(uid, []).append((xyz, diameter, is_mal))
    out = []
    for uid, xyz, is_nodule in candidates:
        match = matching_annotation(xyz, by_series.get(uid, []))
        diameter = match[1] if match else 0.0
        out.append(CandidateInfoTuple(is_nodule, match is not None, bool(match and match[2]), diameter, uid, xyz))
    out.sort(reverse=True)
    return out


def malignancy_candidates(
    candidates: list[tuple[str, XyzTuple, bool]], annotations: list[tuple[str, XyzTuple, float, bool]]
) -> list[CandidateInfoTuple]:
    """Chapter 14: annotated nodules (with malignancy) plus the non-nodule candidates."""
    out = [CandidateInfoTuple(True, True, mal, diameter, uid, xyz) for uid, xyz, diameter, mal in annotations]
    out += [
        CandidateInfoTuple(False, False, False, 0.0, uid, xyz) for uid, xyz, is_nodule in candidates if not is_nodule
    ]
    out.sort(reverse=True)
    return out


def candidate_info_list(
    layout: LunaLayout, rule: str = "chapter14", require_on_disk: bool = True
) -> list[CandidateInfoTuple]:
    """The candidate list of ``layout`` by ``rule`` ("chapter12" or "chapter14", see the module docstring).

    "chapter14" needs ``annotations_with_malignancy.csv``; without it, use "chapter12".
    """
    candidates = read_candidates(layout.candidates_csv)
    if rule == "chapter12":
        result = merge_candidates(candidates, read_annotations(layout.annotations_csv))
    elif rule == "chapter14":
        path = layout.malignancy_csv
        if path is None:
            raise LunaDataError(
                f"{layout.data_dir} has no annotations_with_malignancy.csv (chapter 14's LIDC malignancy); "
                "use the chapter 12 candidate rule, or a copy that has the file"
            )
        result = malignancy_candidates(candidates, read_annotations(path, with_malignancy=True))
    else:
        raise ValueError(f"candidate rule must be 'chapter12' or 'chapter14', not {rule!r}")
    if require_on_disk:
        on_disk = layout.series_paths
        result = [c for c in result if c.series_uid in on_disk]
    return result
