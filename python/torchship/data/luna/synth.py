"""Generated CT scans in the LUNA16 layout: data to learn from when the real 120 GB are not at hand.

``torchship data synth-luna --out DIR --series N --seed S`` writes ``subset0..9/<uid>.mhd/.raw``,
``candidates.csv``, ``annotations.csv`` and ``annotations_with_malignancy.csv`` exactly as a LUNA16
copy has them, plus ``synth_nodules.csv`` (the generator's ground truth, which no loader reads).
Deterministic: the same arguments give byte-identical files. The rules, so a reader can judge how
hard the tasks are:

Scan geometry
  A block of chest ``shape`` = (slices, rows, columns), default 64 x 128 x 128 voxels. Per series: in-plane
  spacing U(0.65, 0.95) mm, slice spacing one of 1.0 / 1.25 / 1.5 / 2.0 / 2.5 mm, a non-zero origin, and one
  series in three stored with x and y flipped (direction (-1, 0, 0, 0, -1, 0, 0, 0, 1)).
Anatomy (HU)
  outside air -1000; an elliptic body of soft tissue (+40) under a 5 mm fat layer (-100); a spine at the
  back (+400, cortex +800); two lung fields, ellipsoids narrowing towards the ends, of parenchyma
  -860 (denser, -800, towards the back); vessel trees growing from each hilum outward (tubes of
  radius 2.5 mm tapering to 0.6 mm, +40, branching); everything smoothed (sigma 0.6 voxel) plus
  Gaussian noise of sigma 20 HU; stored as int16.
Nodules (the positives)
  Poisson(``nodules_per_series``) per scan, inside a lung, diameter log-normal (median 7 mm, sigma 0.5,
  clipped to 3-30 mm: like the book's spread, 32 mm down to 4 mm). Each has a latent irregularity
  z ~ N(0, 1) that the image shows: lobulation (surface radius varies by up to 17 %), 0-4 spicules
  (thin spikes of 0.6-1.4 radii), a blurrier margin and a more heterogeneous texture as z grows;
  a smooth nodule with z < -1 is calcified (+250..+450 HU) half the time. Malignant iff
  1.6 z + 0.8 log(d / 7 mm) / 0.5 + N(0, 0.6) > 1.0: about a quarter of nodules, and diameter alone
  ranks them with AUC ~0.7 while the image carries the rest (see docs/part2.md for measured values).
Non-nodules (the negatives a classifier must reject)
  ``ratio`` candidates per expected nodule and scan (default 400, the book's imbalance): 55 % on vessels
  (bright tubes through the centre of the crop), 15 % on nodule-like blobs planted on vessels
  (ellipsoids 3-6 mm, +20 HU, not annotated), 30 % anywhere in the lungs.
Candidate and annotation files
  annotations.csv: each nodule's centre (jittered 0.2 mm) and diameter. candidates.csv: each nodule once or
  twice as class 1, its centre jittered by N(0, 0.1 d) per axis (so some miss the d / 4 merging rule and get
  diameter 0.0, as in LUNA), plus every non-nodule as class 0, rows in random order.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from torchship.data.luna.geometry import FLIPPED_XY_DIRECTION, IDENTITY_DIRECTION, irc2xyz
from torchship.data.luna.layout import ANNOTATIONS_CSV, CANDIDATES_CSV, MALIGNANCY_CSV

UID_PREFIX = "1.3.6.1.4.1.14519.5.2.1.6279.9999."  # LUNA-like, with a root no real scan uses
TRUTH_CSV = "synth_nodules.csv"
NOISE_HU = 20.0


@dataclass(frozen=True)
class SynthConfig:
    series: int = 10
    seed: int = 0
    shape: tuple[int, int, int] = (64, 128, 128)
    ratio: float = 400.0  # non-nodule candidates per expected nodule
    nodules_per_series: float = 2.5

    def __post_init__(self) -> None:
        if self.series < 1:
            raise ValueError(f"series must be at least 1, got {self.series}")
        if self.shape[0] < 32 or min(self.shape[1:]) < 64:
            raise ValueError(
                f"shape {list(self.shape)} is too small: at least 32 slices of 64 x 64 (the crops are 32x48x48)"
            )
        if math.prod(self.shape) > 64 * 2**20:
            raise ValueError(f"shape {list(self.shape)} holds over 64 Mi voxels per scan; too large for generated data")
        if self.ratio < 0 or self.nodules_per_series < 0:
            raise ValueError("ratio and nodules_per_series cannot be negative")


@dataclass(frozen=True)
class Nodule:
    center_irc: tuple[float, float, float]
    diameter_mm: float
    irregularity: float
    is_mal: bool


class _Scan:
    """One generated volume in voxel space; distances in mm through ``mm`` (per-axis spacing, irc order)."""

    def __init__(self, shape: tuple[int, int, int], mm: np.ndarray, rng: np.random.Generator) -> None:
        self.shape = shape
        self.mm = mm
        self.rng = rng
        self.hu = np.full(shape, -1000.0, dtype=np.float32)
        self.grid = [np.arange(n, dtype=np.float32) * s for n, s in zip(shape, mm, strict=True)]
        self.vessel_points: list[tuple[np.ndarray, float]] = []  # (centre irc, radius mm)

    def box(self, center_irc: np.ndarray, radius_mm: float) -> tuple[tuple[slice, ...], list[np.ndarray]] | None:
        """The voxel box within ``radius_mm`` of a centre, and the mm offsets along each axis."""
        slices, offsets = [], []
        for axis in range(3):
            lo = max(math.floor(center_irc[axis] - radius_mm / self.mm[axis]), 0)
            hi = min(math.ceil(center_irc[axis] + radius_mm / self.mm[axis]) + 1, self.shape[axis])
            if lo >= hi:
                return None
            slices.append(slice(lo, hi))
            offsets.append(self.grid[axis][lo:hi] - center_irc[axis] * self.mm[axis])
        return tuple(slices), offsets

    def blend(self, slices: tuple[slice, ...], alpha: np.ndarray, hu: np.ndarray | float) -> None:
        region = self.hu[slices]
        self.hu[slices] = region * (1 - alpha) + alpha * hu


def _anatomy(scan: _Scan) -> np.ndarray:
    """Body, fat, spine and lungs; returns the lung mask (used to place everything else)."""
    zi, yr, xc = scan.grid
    z = zi[:, None, None]
    y = yr[None, :, None]
    x = xc[None, None, :]
    height, width, depth = yr[-1], xc[-1], zi[-1]
    cy, cx = height / 2, width / 2
    rng = scan.rng
    body_ry, body_rx = 0.44 * height * rng.uniform(0.95, 1.05), 0.48 * width * rng.uniform(0.95, 1.02)
    body_r = ((y - cy) / body_ry) ** 2 + ((x - cx) / body_rx) ** 2 + 0 * z
    body = body_r <= 1.0
    inner = ((y - cy) / (body_ry - 5)) ** 2 + ((x - cx) / (body_rx - 5)) ** 2 + 0 * z <= 1.0
    scan.hu[body] = -100.0
    scan.hu[inner] = 40.0
    spine_y, spine_x = cy + 0.75 * body_ry, cx
    spine_d = np.sqrt((y - spine_y) ** 2 + (x - spine_x) ** 2) + 0 * z
    spine_r = 0.09 * width
    scan.hu[spine_d <= spine_r] = 800.0
    scan.hu[spine_d <= spine_r - 2.5] = 400.0
    lung = np.zeros(scan.shape, dtype=bool)
    zc, zr = depth / 2 + rng.uniform(-0.05, 0.05) * depth, 0.62 * depth
    taper = np.sqrt(np.clip(1 - ((z - zc) / zr) ** 2, 0, 1))
    for side in (-1, 1):
        lx = cx + side * 0.21 * width * rng.uniform(0.95, 1.05)
        ly = cy - 0.04 * height
        rx, ry = 0.16 * width * rng.uniform(0.9, 1.1), 0.29 * height * rng.uniform(0.9, 1.1)
        lung |= ((x - lx) / (rx * taper + 1e-6)) ** 2 + ((y - ly) / (ry * taper + 1e-6)) ** 2 <= 1.0
    density = -860.0 + 60.0 * np.clip((y - cy) / (0.3 * height), 0, 1)  # dependent lung is denser
    scan.hu[lung] = np.broadcast_to(density, scan.shape)[lung]
    return lung


def _segment(scan: _Scan, a: np.ndarray, b: np.ndarray, radius_mm: float, hu: float) -> None:
    """A tube (capsule) from ``a`` to ``b`` (irc) with a 0.5 mm soft edge."""
    mid = (a + b) / 2
    half_mm = float(np.linalg.norm((b - a) * scan.mm)) / 2
    found = scan.box(mid, half_mm + radius_mm + 1.5)
    if found is None:
        return
    slices, (oz, oy, ox) = found
    p = np.stack(np.broadcast_arrays(oz[:, None, None], oy[None, :, None], ox[None, None, :]), axis=-1)
    d = (b - a) * scan.mm
    length2 = float(d @ d) or 1e-6
    p_from_a = p + (mid - a) * scan.mm
    t = np.clip((p_from_a @ d) / length2, 0, 1)
    dist = np.linalg.norm(p_from_a - t[..., None] * d, axis=-1)
    alpha = 1 / (1 + np.exp((dist - radius_mm) / 0.25))
    scan.blend(slices, alpha.astype(np.float32), hu)


def _vessels(scan: _Scan, lung: np.ndarray) -> None:
    """Branching trees from each lung's hilum outward; records points on them for candidates."""
    rng = scan.rng
    inside = np.argwhere(lung)
    if len(inside) == 0:
        return
    centers = [
        inside[inside[:, 2] < scan.shape[2] / 2].mean(axis=0),
        inside[inside[:, 2] >= scan.shape[2] / 2].mean(axis=0),
    ]
    stack: list[tuple[np.ndarray, np.ndarray, float, int]] = []
    for center in centers:
        medial = np.array([0.0, 0.0, scan.shape[2] / 2 - center[2]])
        hilum = center + 0.5 * medial
        for _ in range(12):
            direction = rng.normal(size=3)
            direction[2] = -abs(direction[2]) * np.sign(medial[2]) * 1.5  # away from the midline
            stack.append((hilum + rng.normal(scale=3, size=3), direction, 2.5, 0))
    while stack:
        point, direction, radius, steps = stack.pop()
        direction = direction / (np.linalg.norm(direction * scan.mm) + 1e-9)
        step_mm = 6.0
        nxt = point + direction * step_mm
        ni = np.round(nxt).astype(int)
        if steps > 14 or radius < 0.6 or np.any(ni < 0) or np.any(ni >= scan.shape) or not lung[tuple(ni)]:
            continue
        _segment(scan, point, nxt, radius, 40.0)
        scan.vessel_points.append((nxt, radius))
        new_direction = direction + rng.normal(scale=0.25, size=3) / scan.mm
        stack.append((nxt, new_direction, radius * 0.9, steps + 1))
        if rng.random() < 0.25:
            stack.append((nxt, direction + rng.normal(scale=0.8, size=3) / scan.mm, radius * 0.75, steps + 1))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma)
    return n / (n.std() + 1e-6)


def _nodule(scan: _Scan, nodule: Nodule) -> None:
    """A lobulated, spiculated, textured sphere whose look follows ``irregularity``."""
    rng = scan.rng
    z = nodule.irregularity
    sig = 1 / (1 + math.exp(-1.5 * z))
    radius = nodule.diameter_mm / 2
    lobulation = 0.03 + 0.14 * sig
    spicules = int(np.clip(round(2 * z + 1 + rng.normal(scale=0.5)), 0, 4))
    blur_mm = 0.2 + 0.6 * sig
    texture_hu = 15 + 70 * sig
    calcified = z < -1 and rng.random() < 0.5
    base_hu = rng.uniform(250, 450) if calcified else rng.uniform(0, 60)
    center = np.array(nodule.center_irc)
    reach = radius * (1 + lobulation + (1.4 if spicules else 0)) + 2 * blur_mm + 1
    found = scan.box(center, reach)
    if found is None:
        return
    slices, (oz, oy, ox) = found
    p = np.stack(np.broadcast_arrays(oz[:, None, None], oy[None, :, None], ox[None, None, :]), axis=-1)
    dist = np.linalg.norm(p, axis=-1)
    u = p / (dist[..., None] + 1e-6)
    surface = np.full(dist.shape, radius, dtype=np.float64)
    for _ in range(4):
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        freq = rng.integers(2, 5)
        surface += radius * lobulation * np.cos(freq * np.arccos(np.clip(u @ v, -1, 1)) + rng.uniform(0, 2 * np.pi)) / 2
    for _ in range(spicules):
        w = rng.normal(size=3)
        w /= np.linalg.norm(w)
        surface += radius * rng.uniform(0.6, 1.4) * np.clip(u @ w, 0, 1) ** 60
    alpha = 1 / (1 + np.exp(-(surface - dist) / blur_mm))
    texture = texture_hu * _smooth_noise(rng, dist.shape, 1.0)
    scan.blend(slices, alpha.astype(np.float32), (base_hu + texture).astype(np.float32))


def _blob(scan: _Scan, center: np.ndarray) -> None:
    """A nodule-like ellipsoid that is not a nodule (mucus plug, vessel junction)."""
    rng = scan.rng
    axes = rng.uniform(1.5, 3.0, size=3)
    found = scan.box(center, float(axes.max()) + 1.5)
    if found is None:
        return
    slices, (oz, oy, ox) = found
    r = np.sqrt(
        (oz[:, None, None] / axes[0]) ** 2 + (oy[None, :, None] / axes[1]) ** 2 + (ox[None, None, :] / axes[2]) ** 2
    )
    alpha = 1 / (1 + np.exp((r - 1) / 0.15))
    scan.blend(slices, alpha.astype(np.float32), 20.0)


def _lung_point(rng: np.random.Generator, lung: np.ndarray, margin_vox: np.ndarray) -> np.ndarray | None:
    inside = np.argwhere(lung)
    for _ in range(50):
        p = inside[rng.integers(len(inside))].astype(np.float64) + rng.uniform(-0.5, 0.5, size=3)
        lo, hi = np.floor(p - margin_vox).astype(int), np.ceil(p + margin_vox).astype(int)
        if np.any(lo < 0) or np.any(hi >= lung.shape):
            continue
        if lung[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1].all():
            return p
    return None


def generate_series(cfg: SynthConfig, index: int) -> tuple[dict, np.ndarray, list[Nodule], list[np.ndarray]]:
    """One scan: (geometry, int16 volume, nodules, non-nodule candidate centres in irc)."""
    rng = np.random.default_rng([cfg.seed, index])
    in_plane = float(np.round(rng.uniform(0.65, 0.95), 4))
    thickness = float(rng.choice([1.0, 1.25, 1.5, 2.0, 2.5]))
    mm = np.array([thickness, in_plane, in_plane])
    scan = _Scan(cfg.shape, mm, rng)
    lung = _anatomy(scan)
    _vessels(scan, lung)
    nodules: list[Nodule] = []
    for _ in range(int(rng.poisson(cfg.nodules_per_series))):
        diameter = float(np.clip(np.exp(rng.normal(math.log(7.0), 0.5)), 3.0, 30.0))
        center = _lung_point(rng, lung, np.full(3, diameter / 2 + 1.0) / mm)
        if center is None:
            continue
        if any(np.linalg.norm((center - np.array(n.center_irc)) * mm) < (diameter + n.diameter_mm) for n in nodules):
            continue
        z = float(rng.normal())
        logit = 1.6 * z + 0.8 * math.log(diameter / 7.0) / 0.5 + rng.normal(scale=0.6)
        nodule = Nodule(tuple(float(v) for v in center), diameter, z, bool(logit > 1.0))  # type: ignore[arg-type]
        _nodule(scan, nodule)
        nodules.append(nodule)
    negatives: list[np.ndarray] = []
    n_negative = round(cfg.ratio * cfg.nodules_per_series)
    for _ in range(round(0.15 * n_negative / 4) + 1):  # about four candidates land on each blob
        if scan.vessel_points:
            point, _ = scan.vessel_points[rng.integers(len(scan.vessel_points))]
            _blob(scan, point)
            negatives += [point + rng.normal(scale=0.7, size=3) for _ in range(4)]
    while len(negatives) < n_negative:
        if scan.vessel_points and rng.random() < 0.55 / 0.85:
            point, _ = scan.vessel_points[rng.integers(len(scan.vessel_points))]
            negatives.append(point + rng.normal(scale=0.5, size=3))
        else:
            p = _lung_point(rng, lung, np.zeros(3))
            if p is not None:
                negatives.append(p)
    negatives = [np.clip(p, 0, np.array(cfg.shape) - 1) for p in negatives[:n_negative]]
    volume = ndimage.gaussian_filter(scan.hu, 0.6) + rng.normal(scale=NOISE_HU, size=cfg.shape).astype(np.float32)
    flipped = rng.random() < 1 / 3
    direction = FLIPPED_XY_DIRECTION if flipped else IDENTITY_DIRECTION
    origin = np.round(rng.uniform([-190, -210, -330], [-150, -170, -60]), 3)
    if flipped:  # keep patient coordinates in LUNA's usual range
        origin[:2] = -origin[:2]
    geometry = {
        "spacing_xyz": (in_plane, in_plane, thickness),
        "origin_xyz": tuple(float(v) for v in origin),
        "direction": direction,
    }
    return geometry, np.clip(np.round(volume), -1024, 3071).astype(np.int16), nodules, negatives


def series_uid(seed: int, index: int) -> str:
    return f"{UID_PREFIX}{seed}.{index}"


def write_dataset(cfg: SynthConfig, out: Path, log=print) -> dict[str, int]:
    """Writes the whole layout under ``out``; returns counts (series, nodules, malignant, candidates)."""
    import SimpleITK as sitk

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([cfg.seed, 1_000_003])
    candidates: list[tuple[str, tuple[float, float, float], int]] = []
    annotations: list[tuple[str, tuple[float, float, float], float, bool]] = []
    truth: list[list[object]] = []
    for index in range(cfg.series):
        uid = series_uid(cfg.seed, index)
        geometry, volume, nodules, negatives = generate_series(cfg, index)
        subset = out / f"subset{index % 10}"
        subset.mkdir(exist_ok=True)
        image = sitk.GetImageFromArray(volume)
        image.SetSpacing(geometry["spacing_xyz"])
        image.SetOrigin(geometry["origin_xyz"])
        image.SetDirection(geometry["direction"])
        sitk.WriteImage(image, str(subset / f"{uid}.mhd"))

        def xyz(irc: tuple[float, float, float] | np.ndarray, geometry: dict = geometry) -> tuple[float, float, float]:
            return tuple(irc2xyz(tuple(irc), geometry["origin_xyz"], geometry["spacing_xyz"], geometry["direction"]))  # type: ignore[return-value]

        for n in nodules:
            center = np.array(xyz(n.center_irc))
            annotations.append((uid, tuple(center + rng.normal(scale=0.2, size=3)), n.diameter_mm, n.is_mal))
            for _ in range(1 + int(rng.random() < 0.3)):
                candidates.append((uid, tuple(center + rng.normal(scale=0.1 * n.diameter_mm, size=3)), 1))
            truth.append([uid, *center.round(3), round(n.diameter_mm, 3), n.is_mal, round(n.irregularity, 4)])
        candidates += [(uid, xyz(p), 0) for p in negatives]
        log(
            f"  {uid}: {len(nodules)} nodules ({sum(n.is_mal for n in nodules)} malignant), "
            f"{len(negatives)} non-nodule candidates"
        )
    order = rng.permutation(len(candidates))
    _write_csv(
        out / CANDIDATES_CSV,
        ["seriesuid", "coordX", "coordY", "coordZ", "class"],
        [[candidates[i][0], *_fmt(candidates[i][1]), candidates[i][2]] for i in order],
    )
    _write_csv(
        out / ANNOTATIONS_CSV,
        ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"],
        [[uid, *_fmt(c), f"{d:.8f}"] for uid, c, d, _ in annotations],
    )
    _write_csv(
        out / MALIGNANCY_CSV,
        ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "mal_bool"],
        [[uid, *_fmt(c), f"{d:.8f}", str(m)] for uid, c, d, m in annotations],
    )
    _write_csv(
        out / TRUTH_CSV, ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "mal_bool", "irregularity"], truth
    )
    return {
        "series": cfg.series,
        "nodules": len(annotations),
        "malignant": sum(a[3] for a in annotations),
        "candidates": len(candidates),
        "non_nodule_candidates": sum(1 for c in candidates if c[2] == 0),
    }


def _fmt(xyz: tuple[float, ...]) -> list[str]:
    return [f"{v:.8f}" for v in xyz]


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
