"""Chapter 10's coordinate systems: patient millimetres (X, Y, Z) and voxel indices (index, row, column).

A MetaIO header gives the origin (the physical position of voxel 0), the voxel
size per axis and a direction matrix. The book's conversion:
``xyz = direction @ (cri * spacing) + origin`` where ``cri`` is the index in
(column, row, index) order, and the inverse, rounded to whole voxels.

The book supports only axis-aligned directions: the identity, and X and Y flipped
(``(-1, 0, 0, 0, -1, 0, 0, 0, 1)``, how some scanners store LPS data). Any other
matrix (oblique acquisitions, Z flipped) is refused by name rather than read
with the wrong geometry.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class IrcTuple(NamedTuple):
    index: float
    row: float
    col: float


class XyzTuple(NamedTuple):
    x: float
    y: float
    z: float


IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
FLIPPED_XY_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
SUPPORTED_DIRECTIONS = {IDENTITY_DIRECTION: "identity", FLIPPED_XY_DIRECTION: "x and y flipped"}


class UnsupportedDirectionError(ValueError):
    """A direction matrix other than the two the book supports."""


def check_direction(direction: tuple[float, ...], where: str = "CT") -> np.ndarray:
    """The 3x3 direction matrix, or an error naming the matrix and the two supported ones."""
    rounded = tuple(float(round(v, 6)) + 0.0 for v in direction)  # + 0.0 turns -0.0 into 0.0
    if rounded not in SUPPORTED_DIRECTIONS:
        raise UnsupportedDirectionError(
            f"{where}: direction matrix {list(direction)} is not supported; the book's conversions handle "
            f"only {list(IDENTITY_DIRECTION)} (identity) and {list(FLIPPED_XY_DIRECTION)} (x and y flipped)"
        )
    return np.array(rounded, dtype=np.float64).reshape(3, 3)


def irc2xyz(
    coord_irc: tuple[float, float, float],
    origin_xyz: tuple[float, float, float],
    vx_size_xyz: tuple[float, float, float],
    direction: tuple[float, ...],
) -> XyzTuple:
    """Voxel (index, row, col) -> patient (x, y, z) in mm; fractional indices allowed (centres of mass)."""
    cri = np.array(coord_irc, dtype=np.float64)[::-1]
    direction_a = check_direction(direction)
    xyz = direction_a @ (cri * np.array(vx_size_xyz, dtype=np.float64)) + np.array(origin_xyz, dtype=np.float64)
    return XyzTuple(float(xyz[0]), float(xyz[1]), float(xyz[2]))


def xyz2irc_float(
    coord_xyz: tuple[float, float, float],
    origin_xyz: tuple[float, float, float],
    vx_size_xyz: tuple[float, float, float],
    direction: tuple[float, ...],
) -> IrcTuple:
    """Patient (x, y, z) mm -> continuous voxel (index, row, col), before the book's rounding."""
    direction_a = check_direction(direction)
    offset = np.array(coord_xyz, dtype=np.float64) - np.array(origin_xyz, dtype=np.float64)
    cri = (offset @ np.linalg.inv(direction_a)) / np.array(vx_size_xyz, dtype=np.float64)
    return IrcTuple(float(cri[2]), float(cri[1]), float(cri[0]))


def xyz2irc(
    coord_xyz: tuple[float, float, float],
    origin_xyz: tuple[float, float, float],
    vx_size_xyz: tuple[float, float, float],
    direction: tuple[float, ...],
) -> IrcTuple:
    """Patient (x, y, z) mm -> the voxel (index, row, col) that contains it, rounded as the book does."""
    irc = xyz2irc_float(coord_xyz, origin_xyz, vx_size_xyz, direction)
    return IrcTuple(*(round(v) for v in irc))
