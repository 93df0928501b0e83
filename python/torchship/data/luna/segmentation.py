"""Chapter 13's segmentation data: nodule masks, the lung mask, and 2-D samples of context slices.

- ``annotation_mask``: for each annotated nodule, a box grown outward from its
  centre voxel along each axis while the HU there stays above ``threshold_hu``
  (so it holds one voxel of lower density at its rim), then intersected with
  ``HU > threshold_hu``. Unlike the book, growth stops at one diameter from the
  centre: a nodule against a vessel or the chest wall otherwise takes in all
  the dense tissue in line with it. The published edition's threshold, -700 HU, and label
  (every nodule; the early-access text labels malignant nodules plus all dense
  tissue in the lungs).
- ``lung_mask_2d``: the early-access edition's per-slice lung mask: dense tissue
  (> -300 HU) closed and opened twice, holes filled = body; the air inside the
  body, holes filled and eroded once = lungs; dilated 5 times to take in the
  border tissue.
- A sample: ``(ct_t [2 * context + 2, H, W], label_t [1, H, W], series_uid, slice)``
  with channels = the slices target-3 .. target+3 (clamped at the volume's ends)
  in HU / 1000, then the lung mask: the 8 inputs of the registered
  ``luna_segmentation`` model (early-access layout).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from torchship.data.luna.cache import CtSource
from torchship.data.luna.candidates import CandidateInfoTuple
from torchship.data.luna.ct import Ct
from torchship.data.luna.layout import LunaDataError

CONTEXT_SLICES = 3
MASK_THRESHOLD_HU = -700.0
HU_DIVISOR = 1000.0


def annotation_mask(
    ct: Ct, nodules: Sequence[CandidateInfoTuple], threshold_hu: float = MASK_THRESHOLD_HU
) -> np.ndarray:
    """Boolean mask of ``ct.hu_a``'s shape marking the nodules (see the module docstring)."""
    box = np.zeros(ct.hu_a.shape, dtype=bool)
    shape = ct.hu_a.shape
    for nodule in nodules:
        center = ct.xyz2irc(nodule.center_xyz)
        if not all(0 <= c < s for c, s in zip(center, shape, strict=True)):
            raise LunaDataError(f"nodule of {ct.series_uid} at {list(nodule.center_xyz)} lies outside the CT")
        radii = []
        spacing_irc = tuple(ct.vx_size_xyz)[::-1]
        for axis in range(3):
            radius = 2
            # Never more than one diameter from the centre: a nodule touching a vessel or the chest wall
            # would otherwise grow its box through every dense voxel in line (see the module docstring).
            limit = max(2, math.ceil(nodule.diameter_mm / spacing_irc[axis])) if nodule.diameter_mm > 0 else 2
            while radius < limit:
                lo, hi = list(center), list(center)
                lo[axis] -= radius
                hi[axis] += radius
                if lo[axis] < 0 or hi[axis] >= shape[axis]:
                    radius -= 1
                    break
                if not (ct.hu_a[tuple(lo)] > threshold_hu and ct.hu_a[tuple(hi)] > threshold_hu):
                    break
                radius += 1
            radii.append(max(radius, 0))
        slices = tuple(slice(c - r, c + r + 1) for c, r in zip(center, radii, strict=True))
        box[slices] = True
    return box & (ct.hu_a > threshold_hu)


def lung_mask_2d(hu_slice: np.ndarray) -> np.ndarray:
    """The early-access edition's lung mask of one slice (see the module docstring)."""
    dense = hu_slice > -300
    dense = ndimage.binary_closing(dense, iterations=2)
    dense = ndimage.binary_opening(dense, iterations=2)
    body = ndimage.binary_fill_holes(dense)
    air = ndimage.binary_fill_holes(body & ~dense)
    air = ndimage.binary_erosion(air, iterations=1)
    return ndimage.binary_dilation(air, iterations=5)


def segmentation_input(hu: np.ndarray, slice_ndx: int, context: int = CONTEXT_SLICES) -> np.ndarray:
    """``[2 * context + 2, H, W]`` float32: context slices in HU / 1000 (clamped at the ends), then the lung mask."""
    out = np.empty((2 * context + 2, *hu.shape[1:]), dtype=np.float32)
    for i, ndx in enumerate(range(slice_ndx - context, slice_ndx + context + 1)):
        out[i] = hu[min(max(ndx, 0), hu.shape[0] - 1)] / HU_DIVISOR
    out[-1] = lung_mask_2d(hu[slice_ndx])
    return out


class SegmentationCt:
    """A CT with its nodule mask and which slices hold nodule voxels."""

    def __init__(self, ct: Ct, nodules: Sequence[CandidateInfoTuple]) -> None:
        self.ct = ct
        self.nodules = [n for n in nodules if n.series_uid == ct.series_uid and n.is_nodule]
        self.positive_mask = annotation_mask(ct, self.nodules)
        self.positive_indexes = sorted({int(i) for i in np.nonzero(self.positive_mask.any(axis=(1, 2)))[0]})

    def input_slices(self, slice_ndx: int, context: int = CONTEXT_SLICES) -> np.ndarray:
        return segmentation_input(self.ct.hu_a, slice_ndx, context)


class SegmentationCts:
    """``SegmentationCt`` per series, built once and kept (generated scans are small; real ones are not:
    ``max_cts`` bounds memory as ``CtSource`` does)."""

    def __init__(self, source: CtSource, nodules: Sequence[CandidateInfoTuple], max_cts: int = 1) -> None:
        self.source = source
        self.nodules = list(nodules)
        self.max_cts = max_cts
        self._built: dict[str, SegmentationCt] = {}

    def get(self, series_uid: str) -> SegmentationCt:
        found = self._built.get(series_uid)
        if found is None:
            found = SegmentationCt(self.source.ct(series_uid), self.nodules)
            if len(self._built) >= self.max_cts:
                self._built.pop(next(iter(self._built)))
            self._built[series_uid] = found
        return found


class Luna2dSegmentationDataset(Dataset):
    """Whole slices of ``series``: every slice (``full_ct``) or those holding nodule voxels (validation)."""

    def __init__(self, cts: SegmentationCts, series: Sequence[str], full_ct: bool = False) -> None:
        self.cts = cts
        self.series = list(series)
        self.sample_list: list[tuple[str, int]] = []
        for uid in self.series:
            sct = cts.get(uid)
            indexes = range(sct.ct.hu_a.shape[0]) if full_ct else sct.positive_indexes
            self.sample_list += [(uid, int(i)) for i in indexes]

    def __len__(self) -> int:
        return len(self.sample_list)

    def __getitem__(self, ndx: int) -> tuple[torch.Tensor, torch.Tensor, str, int]:
        uid, slice_ndx = self.sample_list[ndx]
        sct = self.cts.get(uid)
        ct_t = torch.from_numpy(sct.input_slices(slice_ndx))
        label_t = torch.from_numpy(sct.positive_mask[slice_ndx : slice_ndx + 1].astype(np.float32))
        return ct_t, label_t, uid, slice_ndx


class TrainingLuna2dSegmentationDataset(Dataset):
    """The published edition's training samples: a random ``crop`` x ``crop`` window out of the
    ``window`` x ``window`` square centred on a nodule, so every sample holds nodule pixels.
    ``epoch_size`` samples per epoch (the book: 300,000), nodules cycled in a seeded order."""

    def __init__(
        self,
        cts: SegmentationCts,
        nodules: Sequence[CandidateInfoTuple],
        epoch_size: int = 300_000,
        window: int = 96,
        crop: int = 64,
        seed: int = 0,
    ) -> None:
        if not nodules:
            raise ValueError("segmentation training needs at least one nodule in the training series")
        if crop > window:
            raise ValueError(f"crop {crop} exceeds the window {window}")
        self.cts = cts
        self.nodules = sorted(nodules)
        self.epoch_size = epoch_size
        self.window = window
        self.crop = crop
        self.seed = seed
        self.epoch = 0
        self.shuffle_samples(0)

    def shuffle_samples(self, epoch: int) -> None:
        self.epoch = epoch
        self.nodules.sort()
        random.Random(f"{self.seed}/{epoch}").shuffle(self.nodules)

    def __len__(self) -> int:
        return self.epoch_size

    def __getitem__(self, ndx: int) -> tuple[torch.Tensor, torch.Tensor, str, int]:
        nodule = self.nodules[ndx % len(self.nodules)]
        sct = self.cts.get(nodule.series_uid)
        center = sct.ct.xyz2irc(nodule.center_xyz)
        _, rows, cols = sct.ct.hu_a.shape
        window = min(self.window, rows, cols)
        rng = random.Random(f"{self.seed}/{self.epoch}/{ndx}")
        r0 = min(max(center.row - window // 2, 0), rows - window) + rng.randrange(0, window - self.crop + 1)
        c0 = min(max(center.col - window // 2, 0), cols - window) + rng.randrange(0, window - self.crop + 1)
        inputs = sct.input_slices(center.index)[:, r0 : r0 + self.crop, c0 : c0 + self.crop]
        label = sct.positive_mask[center.index : center.index + 1, r0 : r0 + self.crop, c0 : c0 + self.crop]
        return (
            torch.from_numpy(np.ascontiguousarray(inputs)),
            torch.from_numpy(label.astype(np.float32)),
            nodule.series_uid,
            center.index,
        )
