"""Chapter 14's scoring: findings matched to annotated nodules, the 3x4 confusion table, ROC and AUC.

A finding matches an annotated nodule when its centre lies within 0.7 of the
nodule's diameter of the annotation centre (the companion code's
``match_and_score``). The table's rows are the truth (non-nodule, benign,
malignant); columns what the pipeline did (complete miss: no candidate at all;
filtered out: a candidate the nodule classifier rejected; predicted benign;
predicted malignant). An annotated nodule takes the best outcome among the
findings that match it; a finding that matches nothing counts as a non-nodule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from torchship.analysis.pipeline import CtReport, Finding
from torchship.data.luna.candidates import CandidateInfoTuple

MATCH_DIAMETER_FRACTION = 0.7
ROWS = ("non_nodule", "benign", "malignant")
COLUMNS = ("complete_miss", "filtered_out", "pred_benign", "pred_malignant")


def outcome(f: Finding) -> int:
    """Column of one finding: 1 filtered out, 2 predicted benign, 3 predicted malignant."""
    if not f.is_nodule:
        return 1
    return 3 if f.is_mal else 2


def match_and_score(findings: Sequence[Finding], nodules: Sequence[CandidateInfoTuple]) -> np.ndarray:
    """The 3x4 int table for one CT (``nodules``: that CT's annotated nodules)."""
    confusion = np.zeros((3, 4), dtype=np.int64)
    truth = [n for n in nodules if n.is_nodule]
    if findings and truth:
        truth_xyz = np.array([n.center_xyz for n in truth])
        found_xyz = np.array([f.center_xyz for f in findings])
        diameters = np.array([n.diameter_mm for n in truth])
        distance = np.linalg.norm(truth_xyz[:, None] - found_xyz[None], axis=-1) / diameters[:, None]
        matches = distance < MATCH_DIAMETER_FRACTION
    else:
        matches = np.zeros((len(truth), len(findings)), dtype=bool)
    for i, n in enumerate(truth):
        row = 2 if n.is_mal else 1
        columns = [outcome(f) for f, m in zip(findings, matches[i], strict=True) if m]
        confusion[row, max(columns, default=0)] += 1
    for j, f in enumerate(findings):
        if not matches[:, j].any():
            confusion[0, outcome(f)] += 1
    return confusion


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> tuple[np.ndarray, np.ndarray, float]:
    """(false positive rates, true positive rates, area) over every threshold, trapezoid rule.

    A sample is called positive when its score is >= the threshold; thresholds run
    from above the largest score (nothing positive) to the smallest (everything).
    Needs at least one positive and one negative.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D of one length, got {s.shape} and {y.shape}")
    if y.all() or not y.any():
        raise ValueError(f"ROC needs both classes; got {int(y.sum())} positive of {len(y)}")
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    called = s[None, :] >= thresholds[:, None]
    tpr = (called & y).sum(axis=1) / y.sum()
    fpr = (called & ~y).sum(axis=1) / (~y).sum()
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def summarize(reports: Sequence[CtReport], candidates: Sequence[CandidateInfoTuple]) -> dict[str, object]:
    """Totals over several CTs: the confusion table, detection rates and the funnel."""
    total = np.zeros((3, 4), dtype=np.int64)
    funnel: dict[str, int] = {}
    for r in reports:
        nodules = [c for c in candidates if c.series_uid == r.series_uid and c.is_nodule]
        total += match_and_score(r.findings, nodules)
        for k, v in r.funnel.items():
            funnel[k] = funnel.get(k, 0) + v
    nodule_count = int(total[1:].sum())
    return {
        "confusion": total.tolist(),
        "nodules": nodule_count,
        "segmentation_detected": int(total[1:, 1:].sum()),
        "classifier_detected": int(total[1:, 2:].sum()),
        "segmentation_false_positives": int(total[0, 1:].sum()),
        "classifier_false_positives": int(total[0, 2:].sum()),
        "funnel": funnel,
    }
