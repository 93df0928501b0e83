"""One CT scan: voxels in Hounsfield units, its geometry, and the book's fixed-size crops.

Read through SimpleITK (MetaIO ``.mhd`` + ``.raw``); values clipped to
[-1000, 1000] HU (air -1000, water 0, bone above +1000: everything denser than
bone is of no interest and would only widen the input range).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from torchship.data.luna.geometry import IrcTuple, XyzTuple, check_direction, irc2xyz, xyz2irc
from torchship.data.luna.layout import LunaDataError

HU_MIN = -1000.0
HU_MAX = 1000.0


MAX_HEADER_BYTES = 64 * 1024
MAX_VOXELS = 2**30  # 4 GiB as float32; a real CT has ~2**26 (512 x 512 x 250)


def _raw_path(mhd_path: Path) -> Path:
    """The data file a MetaIO header names (``ElementDataFile``), so a missing one is reported by name.

    The header's ``DimSize`` is checked first: a header that promises more than ``MAX_VOXELS`` is refused
    before SimpleITK tries to allocate it.
    """
    try:
        with open(mhd_path, "rb") as f:
            header = f.read(MAX_HEADER_BYTES).decode(errors="replace")
    except OSError as e:
        raise LunaDataError(f"cannot read {mhd_path}: {e}") from e
    fields = {}
    for line in header.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    dims = fields.get("DimSize", "").split()
    if not dims or not all(d.isdigit() for d in dims):
        raise LunaDataError(f"{mhd_path} is not a MetaIO header: DimSize is {fields.get('DimSize')!r}")
    if math.prod(int(d) for d in dims) > MAX_VOXELS:
        raise LunaDataError(f"{mhd_path}: DimSize {' x '.join(dims)} exceeds {MAX_VOXELS} voxels; not a CT read here")
    if "ElementDataFile" not in fields:
        raise LunaDataError(f"{mhd_path} is not a MetaIO header: it has no ElementDataFile line")
    value = fields["ElementDataFile"]
    return mhd_path if value == "LOCAL" else mhd_path.parent / value


class Ct:
    """``hu_a`` is a float32 array indexed [index, row, col] (slices, rows, columns)."""

    def __init__(self, series_uid: str, mhd_path: Path) -> None:
        import SimpleITK as sitk

        self.series_uid = series_uid
        self.mhd_path = Path(mhd_path)
        raw = _raw_path(self.mhd_path)
        if not raw.is_file():
            raise LunaDataError(f"{self.mhd_path} names its voxel file {raw.name}, which is missing")
        try:
            image = sitk.ReadImage(str(self.mhd_path))
        except RuntimeError as e:  # SimpleITK reports every reader failure as RuntimeError
            first = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
            raise LunaDataError(f"SimpleITK cannot read {self.mhd_path}: {first}") from e
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise LunaDataError(
                f"{self.mhd_path}: expected a 3-D single-channel CT, got {image.GetDimension()}-D with "
                f"{image.GetNumberOfComponentsPerPixel()} components"
            )
        self.hu_a = np.asarray(sitk.GetArrayFromImage(image), dtype=np.float32)
        self.hu_a.clip(HU_MIN, HU_MAX, self.hu_a)
        self.origin_xyz = XyzTuple(*image.GetOrigin())
        self.vx_size_xyz = XyzTuple(*image.GetSpacing())
        self.direction = tuple(float(v) for v in image.GetDirection())
        check_direction(self.direction, str(self.mhd_path))
        if min(self.vx_size_xyz) <= 0:
            raise LunaDataError(f"{self.mhd_path}: voxel spacing {list(self.vx_size_xyz)} must be positive")

    @property
    def shape_irc(self) -> tuple[int, int, int]:
        return tuple(self.hu_a.shape)  # type: ignore[return-value]

    def xyz2irc(self, center_xyz: tuple[float, float, float]) -> IrcTuple:
        return xyz2irc(center_xyz, self.origin_xyz, self.vx_size_xyz, self.direction)

    def irc2xyz(self, center_irc: tuple[float, float, float]) -> XyzTuple:
        return irc2xyz(center_irc, self.origin_xyz, self.vx_size_xyz, self.direction)

    def get_raw_candidate(
        self, center_xyz: tuple[float, float, float], width_irc: tuple[int, int, int]
    ) -> tuple[np.ndarray, IrcTuple]:
        """The ``width_irc`` chunk around ``center_xyz`` and the centre's voxel; see ``crop_bounds``."""
        center_irc = self.xyz2irc(center_xyz)
        slices = crop_bounds(center_irc, width_irc, self.shape_irc, f"{self.series_uid} at {list(center_xyz)}")
        return self.hu_a[slices].copy(), center_irc


def crop_bounds(
    center_irc: tuple[int, int, int], width_irc: tuple[int, int, int], shape_irc: tuple[int, ...], where: str
) -> tuple[slice, slice, slice]:
    """The book's crop: start at round(centre - width / 2); near an edge, shift inside (never pad).

    The chunk keeps its full size, so a candidate near the edge is off-centre in it.
    A centre outside the volume, or a volume smaller than the crop, is an error.
    """
    slices = []
    for axis, (center, width, size) in enumerate(zip(center_irc, width_irc, shape_irc, strict=True)):
        if not 0 <= center < size:
            raise LunaDataError(
                f"candidate {where}: voxel {list(center_irc)} lies outside the CT of shape {list(shape_irc)}"
            )
        if width > size:
            raise LunaDataError(
                f"candidate {where}: crop {list(width_irc)} is larger than the CT {list(shape_irc)} on axis {axis}"
            )
        start = round(center - width / 2)
        start = min(max(start, 0), size - width)
        slices.append(slice(start, start + width))
    return slices[0], slices[1], slices[2]
