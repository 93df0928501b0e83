"""The classification and segmentation datasets: split, balancing, augmentation, samples.

Run: .venv/bin/python -m pytest tests/part2/test_datasets.py -q
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from torchship.data.luna.cache import CropCache, CtSource
from torchship.data.luna.candidates import CandidateInfoTuple, candidate_info_list
from torchship.data.luna.datasets import Augmentation, LunaDataset, augment_chunk, split_series
from torchship.data.luna.geometry import XyzTuple
from torchship.data.luna.layout import LunaLayout
from torchship.data.luna.segmentation import (
    Luna2dSegmentationDataset,
    SegmentationCts,
    TrainingLuna2dSegmentationDataset,
    annotation_mask,
    lung_mask_2d,
)


def test_split_series_is_the_books_stride_from_the_end() -> None:
    series = [f"s{i:02d}" for i in range(25)]
    val = split_series(series, 10, is_val_set=True)
    train = split_series(series, 10, is_val_set=False)
    assert val == ["s04", "s14", "s24"]  # list[::-10] of the sorted list
    assert sorted(train + val) == series and not set(train) & set(val)
    with pytest.raises(ValueError, match="leave no validation series"):
        split_series([], 10, is_val_set=True)
    with pytest.raises(ValueError, match="needs val_stride > 0"):
        split_series(series, 0, is_val_set=True)


def _fake_candidates(positives: int, negatives: int) -> list[CandidateInfoTuple]:
    pos = [CandidateInfoTuple(True, True, False, 5.0, "s", XyzTuple(float(i), 0.0, 0.0)) for i in range(positives)]
    neg = [CandidateInfoTuple(False, False, False, 0.0, "s", XyzTuple(float(i), 1.0, 0.0)) for i in range(negatives)]
    return pos + neg


@pytest.mark.parametrize("ratio", [1, 2, 5])
def test_balanced_indexing_follows_ratio_int(ratio: int) -> None:
    """Chapter 12: ndx % (ratio + 1) == 0 -> positive ndx // (ratio + 1); else negative ndx - 1 - that."""
    ds = LunaDataset(_fake_candidates(3, 7), crops=None, series_uid="s", ratio_int=ratio, epoch_size=40)  # type: ignore[arg-type]
    assert len(ds) == 40
    for ndx in range(40):
        c = ds.candidate(ndx)
        pos_ndx = ndx // (ratio + 1)
        if ndx % (ratio + 1) == 0:
            assert c == ds.positive_list[pos_ndx % 3]
        else:
            assert c == ds.negative_list[(ndx - 1 - pos_ndx) % 7]
    share = sum(ds.candidate(n).is_nodule for n in range(40)) / 40
    assert share == pytest.approx(1 / (ratio + 1), abs=0.03)


def test_balanced_length_defaults_to_the_books_200000() -> None:
    assert len(LunaDataset(_fake_candidates(2, 2), None, series_uid="s", ratio_int=1)) == 200_000  # type: ignore[arg-type]
    assert len(LunaDataset(_fake_candidates(2, 5), None, series_uid="s")) == 7  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="balancing needs both classes"):
        LunaDataset(_fake_candidates(0, 5), None, series_uid="s", ratio_int=1)  # type: ignore[arg-type]


def test_shuffle_is_seeded_per_epoch() -> None:
    a = LunaDataset(_fake_candidates(4, 30), None, series_uid="s", seed=3)  # type: ignore[arg-type]
    b = LunaDataset(_fake_candidates(4, 30), None, series_uid="s", seed=3)  # type: ignore[arg-type]
    first = [a.candidate(i) for i in range(34)]
    assert first == [b.candidate(i) for i in range(34)]
    a.shuffle_samples(1)
    assert [a.candidate(i) for i in range(34)] != first
    a.shuffle_samples(0)
    assert [a.candidate(i) for i in range(34)] == first


class _AlwaysAbove(random.Random):
    def random(self) -> float:  # every coin flip says "flip"
        return 0.75


def test_flip_augmentation_mirrors_every_axis() -> None:
    chunk = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)
    out = augment_chunk(chunk, Augmentation(flip=True), _AlwaysAbove())
    torch.testing.assert_close(out, chunk.flip(1, 2, 3), rtol=0, atol=1e-4)


def test_augmentations_keep_shape_and_range() -> None:
    chunk = torch.rand(1, 32, 48, 48) * 2000 - 1000
    aug = Augmentation.book(flip=True, offset=True, scale=True, rotate=True, noise=False)
    out = augment_chunk(chunk, aug, random.Random(0))
    assert out.shape == chunk.shape
    assert out.min() >= chunk.min() - 1e-3 and out.max() <= chunk.max() + 1e-3  # interpolation, border padding
    noisy = augment_chunk(chunk, Augmentation(noise=25.0), random.Random(0))
    assert 20 < float((noisy - chunk).std()) < 30


def test_classification_sample_is_the_books_tuple(tiny_luna: Path, tmp_path: Path) -> None:
    layout = LunaLayout(tiny_luna)
    candidates = candidate_info_list(layout)
    crops = CropCache(CtSource(layout, max_cts=3), None)
    ds = LunaDataset(candidates, crops, val_stride=2, is_val_set=True)
    chunk, label, uid, center = ds[0]
    c = ds.candidate(0)
    assert chunk.shape == (1, 32, 48, 48) and chunk.dtype == torch.float32
    assert label.tolist() == [not c.is_nodule, c.is_nodule] and label.dtype == torch.int64
    assert uid == c.series_uid and uid in ds.series
    ct = crops.source.ct(uid)
    assert tuple(center.tolist()) == ct.xyz2irc(c.center_xyz)
    assert float(chunk.min()) >= -1000 and float(chunk.max()) <= 1000
    malignancy = LunaDataset(candidates, crops, val_stride=0, task="malignancy")
    assert all(c.is_nodule for c in malignancy.candidates)
    assert {c.is_mal for c in malignancy.positive_list} == {True}


def test_annotation_mask_grows_over_the_dense_nodule_only() -> None:
    class FakeCt:
        series_uid = "s"
        hu_a = np.full((20, 30, 30), -900.0, dtype=np.float32)
        vx_size_xyz = (1.0, 1.0, 1.0)

        def xyz2irc(self, xyz: tuple[float, float, float]) -> tuple[int, int, int]:
            return tuple(int(v) for v in xyz)  # type: ignore[return-value]

    ct = FakeCt()
    ct.hu_a[8:13, 10:16, 12:15] = 50.0  # a 5 x 6 x 3 dense box
    ct.hu_a[0, 0, 0] = 50.0  # dense but far away: not part of the nodule
    nodule = CandidateInfoTuple(True, True, False, 6.0, "s", XyzTuple(10, 13, 13))
    mask = annotation_mask(ct, [nodule])  # type: ignore[arg-type]
    expected = np.zeros_like(mask)
    expected[8:13, 10:16, 12:15] = True
    np.testing.assert_array_equal(mask, expected)
    ct.hu_a[:, 10:16, 12:15] = 50.0  # the nodule against a dense wall along the slices
    small = CandidateInfoTuple(True, True, False, 3.0, "s", XyzTuple(10, 13, 13))
    mask = annotation_mask(ct, [small])  # type: ignore[arg-type]
    assert mask.any(axis=(1, 2)).nonzero()[0].tolist() == list(range(7, 14))  # one diameter (3 voxels) each way


def test_lung_mask_finds_the_lungs_inside_the_body() -> None:
    hu = np.full((64, 64), -1000.0, dtype=np.float32)
    yy, xx = np.indices(hu.shape)
    hu[((yy - 32) / 28) ** 2 + ((xx - 32) / 30) ** 2 <= 1] = 40.0  # body
    hu[((yy - 30) / 15) ** 2 + ((xx - 18) / 8) ** 2 <= 1] = -850.0  # left lung
    mask = lung_mask_2d(hu)
    assert mask[30, 18] and not mask[30, 46] and not mask[2, 2]


def test_segmentation_samples(tiny_luna: Path) -> None:
    layout = LunaLayout(tiny_luna)
    nodules = [c for c in candidate_info_list(layout) if c.is_nodule]
    cts = SegmentationCts(CtSource(layout, max_cts=3), nodules, max_cts=3)
    series = sorted(layout.series_paths)
    val = Luna2dSegmentationDataset(cts, series, full_ct=False)
    full = Luna2dSegmentationDataset(cts, series[:1], full_ct=True)
    assert len(full) == 32 and 0 < len(val) < 96
    inputs, label, uid, slice_ndx = val[0]
    assert inputs.shape == (8, 64, 64) and label.shape == (1, 64, 64) and label.sum() > 0
    hu = cts.get(uid).ct.hu_a
    np.testing.assert_allclose(inputs[3].numpy(), hu[slice_ndx] / 1000.0)  # the target slice in the middle
    np.testing.assert_allclose(inputs[0].numpy(), hu[max(slice_ndx - 3, 0)] / 1000.0)  # clamped at the ends
    assert set(np.unique(inputs[7].numpy())) <= {0.0, 1.0}  # the lung mask
    train = TrainingLuna2dSegmentationDataset(cts, nodules, epoch_size=6, window=48, crop=32)
    for k in range(6):
        crop_in, crop_label, _, _ = train[k]
        assert crop_in.shape == (8, 32, 32) and crop_label.shape == (1, 32, 32)
        assert crop_label.sum() > 0  # the crop always holds nodule pixels
