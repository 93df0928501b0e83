"""Chapter 14: grouping, matching, ROC/AUC by hand, and the pipeline's mechanics on a generated scan.

Run: .venv/bin/python -m pytest tests/part2/test_analysis.py -q
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from luna_helpers import write_mhd
from scipy import ndimage
from torch import nn

from torchship.analysis.evaluation import match_and_score, roc_auc, summarize
from torchship.analysis.models import MALIGNANCY, NODULE, SEGMENTATION, EagerModels
from torchship.analysis.pipeline import Finding, analyze_ct, group_segmentation
from torchship.data.luna.candidates import CandidateInfoTuple, candidate_info_list
from torchship.data.luna.ct import Ct
from torchship.data.luna.geometry import XyzTuple
from torchship.data.luna.layout import LunaLayout
from torchship.data.luna.segmentation import SegmentationCt


def test_roc_auc_by_hand() -> None:
    fpr, tpr, auc = roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    # thresholds inf, 0.8, 0.4, 0.35, 0.1 -> (fpr, tpr) (0,0) (0,.5) (.5,.5) (.5,1) (1,1): area 0.75
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0] and tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert auc == pytest.approx(0.75)
    assert roc_auc([0.3, 0.3], [True, False])[2] == pytest.approx(0.5)  # a tie is a diagonal step
    assert roc_auc([1, 2, 3], [False, True, True])[2] == pytest.approx(1.0)
    assert roc_auc([1, 2, 3], [True, True, False])[2] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="needs both classes"):
        roc_auc([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="one length"):
        roc_auc([0.1, 0.2], [True])


def _finding(x: float, p_nodule: float, p_mal: float | None) -> Finding:
    return Finding(XyzTuple(x, 0.0, 0.0), (0.0, 0.0, x), 10, p_nodule, p_mal)


def test_match_and_score_by_hand() -> None:
    nodules = [
        CandidateInfoTuple(True, True, True, 10.0, "s", XyzTuple(0.0, 0.0, 0.0)),  # malignant, matched within 7 mm
        CandidateInfoTuple(True, True, False, 10.0, "s", XyzTuple(100.0, 0.0, 0.0)),  # benign, only a filtered finding
        CandidateInfoTuple(True, True, False, 4.0, "s", XyzTuple(200.0, 0.0, 0.0)),  # benign, missed (3 mm > 2.8 mm)
    ]
    findings = [
        _finding(6.9, 0.9, 0.2),  # matches nodule 0, predicted benign
        _finding(-3.0, 0.8, 0.7),  # matches nodule 0 too, predicted malignant: the best outcome counts
        _finding(101.0, 0.3, None),  # matches nodule 1, filtered out
        _finding(203.0, 0.9, 0.1),  # 3 mm from nodule 2 (diameter 4: limit 2.8 mm): no match -> non-nodule
        _finding(500.0, 0.1, None),  # nothing there: a filtered-out non-nodule
    ]
    confusion = match_and_score(findings, nodules)
    assert confusion.tolist() == [
        [0, 1, 1, 0],  # non-nodules: one filtered out, one predicted benign
        [1, 1, 0, 0],  # benign: one complete miss, one filtered out
        [0, 0, 0, 1],  # malignant: predicted malignant
    ]
    assert match_and_score([], nodules).tolist() == [[0, 0, 0, 0], [2, 0, 0, 0], [1, 0, 0, 0]]


def test_grouping_finds_each_blob_at_its_centre(tmp_path: Path) -> None:
    volume = np.full((20, 30, 40), -800, dtype=np.int16)
    ct = Ct("g", write_mhd(tmp_path, "g", volume))
    mask = np.zeros(volume.shape, dtype=bool)
    mask[2:5, 3:6, 4:7] = True  # 27 voxels centred on (3, 4, 5)
    mask[10:12, 20:22, 30:32] = True  # 8 voxels centred on (10.5, 20.5, 30.5)
    groups = group_segmentation(ct, mask)
    assert [(irc, size) for _, irc, size in groups] == [((3.0, 4.0, 5.0), 27), ((10.5, 20.5, 30.5), 8)]
    assert groups[0][0] == pytest.approx(ct.irc2xyz((3.0, 4.0, 5.0)))
    assert group_segmentation(ct, np.zeros(volume.shape, dtype=bool)) == []


class _OracleSegmentation(nn.Module):
    """A stand-in segmentation model that answers with the scan's own nodule mask, slice batch after slice batch
    (the pipeline segments slices in order)."""

    def __init__(self, mask: np.ndarray) -> None:
        super().__init__()
        self.mask = torch.from_numpy(mask).float()
        self.next_slice = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mask[self.next_slice : self.next_slice + x.shape[0]].unsqueeze(1)
        self.next_slice += x.shape[0]
        return out


class _CentreDensity(nn.Module):
    """A stand-in classifier: the probability rises with the mean HU of the crop's central 4x8x8 voxels."""

    def __init__(self, offset_hu: float) -> None:
        super().__init__()
        self.offset_hu = offset_hu

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        centre = x[:, 0, 14:18, 20:28, 20:28].mean(dim=(1, 2, 3))
        logit = (centre - self.offset_hu) / 50
        logits = torch.stack([-logit, logit], dim=1)
        return logits, logits.softmax(dim=1)


def test_pipeline_mechanics_on_a_generated_scan(tiny_luna: Path) -> None:
    layout = LunaLayout(tiny_luna)
    candidates = candidate_info_list(layout)
    nodules = [c for c in candidates if c.is_nodule]
    reports, surviving = [], 0
    for uid, path in sorted(layout.series_paths.items()):
        ct = Ct(uid, path)
        truth = SegmentationCt(ct, nodules).positive_mask
        # The pipeline's erosion removes nodules only one voxel thick on some axis: count those that stay.
        labels, count = ndimage.label(truth)
        eroded = ndimage.binary_erosion(truth, iterations=1)
        surviving += sum(bool(eroded[labels == k].any()) for k in range(1, count + 1))
        models = EagerModels(
            {
                SEGMENTATION: _OracleSegmentation(truth),
                NODULE: _CentreDensity(-400.0),
                MALIGNANCY: _CentreDensity(200.0),
            }
        )
        reports.append(analyze_ct(ct, models))
    for r in reports:
        f = r.funnel
        assert f["voxels"] == 32 * 64 * 64
        assert f["candidates"] == len(r.findings)
        assert f["nodules"] == sum(x.is_nodule for x in r.findings)
        assert f["malignant"] == sum(x.is_mal for x in r.findings) <= f["nodules"] <= f["candidates"]
        assert all((x.prob_mal is None) == (not x.is_nodule) for x in r.findings)
        assert r.prob_malignant == max((x.prob_mal or 0.0 for x in r.findings), default=0.0)
    summary = summarize(reports, candidates)
    assert summary["nodules"] == len(nodules) > 0
    assert summary["segmentation_detected"] == surviving > 0  # each surviving blob is found and matched
    assert summary["segmentation_false_positives"] == 0
