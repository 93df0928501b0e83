"""Chapter 14's nodule analysis: one CT in, candidates with nodule and malignancy probabilities out.

1. segmentation: every slice (8 channels: 7 context slices + lung mask) through
   the segmentation model; probability > ``threshold`` (0.5), then one binary
   erosion to drop specks;
2. grouping: connected components (``scipy.ndimage.label``); each component's
   centre of mass, weighted by HU + 1001 (clipped to [-1000, 1000]) as the book
   does, becomes a candidate in patient coordinates;
3. nodule classification of the 32x48x48 crop around each candidate;
4. malignancy classification of the candidates classified as nodules;
5. diagnosis: the patient is flagged when any nodule's malignancy probability
   exceeds ``threshold``.

The funnel counts what each step keeps: voxels, flagged voxels, candidates,
nodules, malignant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from torchship.analysis.models import CLASSIFIER_BATCH, MALIGNANCY, NODULE, SEGMENTATION_BATCH, PipelineModels
from torchship.data.luna.ct import Ct
from torchship.data.luna.datasets import WIDTH_IRC
from torchship.data.luna.geometry import XyzTuple
from torchship.data.luna.segmentation import segmentation_input

THRESHOLD = 0.5


@dataclass(frozen=True)
class Finding:
    center_xyz: XyzTuple
    center_irc: tuple[float, float, float]  # centre of mass, fractional voxels
    voxels: int  # size of the connected component
    prob_nodule: float
    prob_mal: float | None  # None when not classified as a nodule

    @property
    def is_nodule(self) -> bool:
        return self.prob_nodule > THRESHOLD

    @property
    def is_mal(self) -> bool:
        return self.prob_mal is not None and self.prob_mal > THRESHOLD


@dataclass
class CtReport:
    series_uid: str
    findings: list[Finding]
    funnel: dict[str, int] = field(default_factory=dict)

    @property
    def prob_malignant(self) -> float:
        """The patient's score: the largest malignancy probability of any nodule (0 when none)."""
        return max((f.prob_mal for f in self.findings if f.prob_mal is not None), default=0.0)

    @property
    def diagnosis(self) -> str:
        return "malignant" if self.prob_malignant > THRESHOLD else "no malignant nodule found"


def segment_ct(ct: Ct, models: PipelineModels, threshold: float = THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """(per-voxel nodule probability, cleaned boolean mask) for the whole CT."""
    depth = ct.hu_a.shape[0]
    probability = np.zeros(ct.hu_a.shape, dtype=np.float32)
    for start in range(0, depth, SEGMENTATION_BATCH):
        indexes = range(start, min(start + SEGMENTATION_BATCH, depth))
        batch = torch.from_numpy(np.stack([segmentation_input(ct.hu_a, i) for i in indexes]))
        probability[start : start + len(indexes)] = models.segment(batch)[:, 0].numpy()
    mask = ndimage.binary_erosion(probability > threshold, iterations=1)
    return probability, mask


def group_segmentation(ct: Ct, mask: np.ndarray) -> list[tuple[XyzTuple, tuple[float, float, float], int]]:
    """Connected components of ``mask`` -> (centre xyz, centre irc, voxel count), in label order."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    centers = ndimage.center_of_mass(ct.hu_a.clip(-1000, 1000) + 1001, labels=labels, index=index)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels=labels, index=index)
    out = []
    for center_irc, size in zip(centers, sizes, strict=True):
        irc = tuple(float(v) for v in center_irc)
        out.append((ct.irc2xyz(irc), irc, int(size)))
    return out


def classify(ct: Ct, centers: list[XyzTuple], models: PipelineModels, model: str) -> list[float]:
    """The positive-class probability of ``model`` for the crop around each centre."""
    probs: list[float] = []
    for start in range(0, len(centers), CLASSIFIER_BATCH):
        chunks = [ct.get_raw_candidate(c, WIDTH_IRC)[0] for c in centers[start : start + CLASSIFIER_BATCH]]
        batch = torch.from_numpy(np.stack(chunks)).unsqueeze(1)
        probs += [float(p) for p in models.classify(model, batch)]
    return probs


def analyze_ct(ct: Ct, models: PipelineModels, threshold: float = THRESHOLD) -> CtReport:
    _, mask = segment_ct(ct, models, threshold)
    groups = group_segmentation(ct, mask)
    centers = [g[0] for g in groups]
    p_nodule = classify(ct, centers, models, NODULE)
    nodule_ndx = [i for i, p in enumerate(p_nodule) if p > threshold]
    p_mal = dict(zip(nodule_ndx, classify(ct, [centers[i] for i in nodule_ndx], models, MALIGNANCY), strict=True))
    findings = [Finding(center, irc, size, p_nodule[i], p_mal.get(i)) for i, (center, irc, size) in enumerate(groups)]
    funnel = {
        "voxels": int(ct.hu_a.size),
        "flagged_voxels": int(mask.sum()),
        "candidates": len(findings),
        "nodules": len(nodule_ndx),
        "malignant": sum(1 for f in findings if f.is_mal),
    }
    return CtReport(ct.series_uid, findings, funnel)
