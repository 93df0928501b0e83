"""Where a LUNA16 copy keeps its files, and the errors that name a missing or malformed one.

``--data-dir`` points at a folder holding, as the LUNA16 download unpacks:

    subset0/ .. subset9/            <series_uid>.mhd (MetaIO header) + <series_uid>.raw (voxels)
    candidates.csv                  seriesuid,coordX,coordY,coordZ,class
    annotations.csv                 seriesuid,coordX,coordY,coordZ,diameter_mm
    annotations_with_malignancy.csv seriesuid,coordX,coordY,coordZ,diameter_mm,mal_bool  (chapter 14; optional)

The book keeps the CSVs in ``data/part2/luna/`` and the subsets in
``data-unversioned/part2/luna/``; put both in one folder (or symlink them there).
Subsets may be missing: the book trains on whatever is on disk
(``requireOnDisk_bool``). ``torchship data synth-luna`` writes this same layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

CANDIDATES_CSV = "candidates.csv"
ANNOTATIONS_CSV = "annotations.csv"
MALIGNANCY_CSV = "annotations_with_malignancy.csv"
SUBSET_PATTERN = re.compile(r"^subset[0-9]$")


class LunaDataError(ValueError):
    """A LUNA16 file is missing or malformed; the message names it."""


@dataclass(frozen=True)
class LunaLayout:
    data_dir: Path

    def __post_init__(self) -> None:
        if not Path(self.data_dir).is_dir():
            raise LunaDataError(
                f"LUNA data folder {self.data_dir} does not exist; point --data-dir at the folder holding "
                "subset0..subset9 and candidates.csv (or generate one: torchship data synth-luna --out DIR)"
            )

    @property
    def candidates_csv(self) -> Path:
        return self._required(CANDIDATES_CSV)

    @property
    def annotations_csv(self) -> Path:
        return self._required(ANNOTATIONS_CSV)

    @property
    def malignancy_csv(self) -> Path | None:
        """The chapter 14 file (LIDC malignancy merged onto LUNA's annotations), or None when absent."""
        path = Path(self.data_dir) / MALIGNANCY_CSV
        return path if path.is_file() else None

    def _required(self, name: str) -> Path:
        path = Path(self.data_dir) / name
        if not path.is_file():
            raise LunaDataError(f"{path} is missing: a LUNA16 copy has {name} beside subset0..subset9")
        return path

    @cached_property
    def series_paths(self) -> dict[str, Path]:
        """series_uid -> .mhd path over every subset folder on disk."""
        found: dict[str, Path] = {}
        for subset in sorted(Path(self.data_dir).iterdir()):
            if subset.is_dir() and SUBSET_PATTERN.match(subset.name):
                for mhd in sorted(subset.glob("*.mhd")):
                    found[mhd.stem] = mhd
        return found

    def mhd_path(self, series_uid: str) -> Path:
        try:
            return self.series_paths[series_uid]
        except KeyError:
            raise LunaDataError(
                f"series {series_uid} has no .mhd file under {self.data_dir}/subset0..subset9"
            ) from None
