"""Chapter 12's metrics: precision, recall and F1 from true/false positive/negative counts.

Counts are what a distributed run can add up across processes (``all_reduce``
of a confusion matrix), so every metric here is computed from counts, never
from per-batch averages. A zero denominator gives ``nan`` (the book's
"nan prc" line) instead of an exception or a NumPy ``RuntimeWarning``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

NAN = float("nan")


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else NAN


@dataclass(frozen=True)
class BinaryCounts:
    """Counts for one "positive" class against the rest (book: malignant vs benign)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @staticmethod
    def from_correct(pos_correct: int, pos_total: int, neg_correct: int, neg_total: int) -> BinaryCounts:
        """The book's log lines give "(117 of 136)" per class; TP/FN/TN/FP follow from them."""
        return BinaryCounts(tp=pos_correct, fn=pos_total - pos_correct, tn=neg_correct, fp=neg_total - neg_correct)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        if math.isnan(p) or math.isnan(r):
            return NAN
        return _ratio(2 * p * r, p + r)

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.tp + self.fp + self.fn + self.tn)


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[num_classes, num_classes]`` int64 counts, rows = true label, columns = prediction."""
    idx = labels.to(torch.int64) * num_classes + predictions.to(torch.int64)
    return torch.bincount(idx.flatten(), minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def one_vs_rest(matrix: torch.Tensor, positive: int) -> BinaryCounts:
    """Counts for ``positive`` against every other class."""
    m = matrix.to(torch.int64)
    tp = int(m[positive, positive])
    fn = int(m[positive].sum()) - tp
    fp = int(m[:, positive].sum()) - tp
    tn = int(m.sum()) - tp - fn - fp
    return BinaryCounts(tp=tp, fp=fp, fn=fn, tn=tn)


def classification_metrics(
    matrix: torch.Tensor, labels: list[str] | None = None, loss: float | None = None
) -> dict[str, float]:
    """The book's ``metrics_dict`` keys for one split, from a confusion matrix.

    Two classes: class 1 is the positive one (bird in CIFAR-2, as malignant in
    chapter 12). More classes: precision, recall and F1 are macro averages of
    each class against the rest; a class never predicted makes precision (and
    F1) ``nan``, which is the honest answer rather than a silent 0.
    ``correct/<label>`` is each class's recall in percent, as the book logs it.
    """
    n = matrix.shape[0]
    names = labels if labels and len(labels) == n else [str(i) for i in range(n)]
    total = int(matrix.sum())
    out: dict[str, float] = {}
    if loss is not None:
        out["loss/all"] = float(loss)
    out["correct/all"] = 100.0 * _ratio(int(matrix.diagonal().sum()), total)
    for i, name in enumerate(names):
        out[f"correct/{name}"] = 100.0 * _ratio(int(matrix[i, i]), int(matrix[i].sum()))
    per_class = [one_vs_rest(matrix, 1)] if n == 2 else [one_vs_rest(matrix, c) for c in range(n)]
    out["pr/precision"] = sum(c.precision for c in per_class) / len(per_class)
    out["pr/recall"] = sum(c.recall for c in per_class) / len(per_class)
    out["pr/f1_score"] = sum(c.f1 for c in per_class) / len(per_class)
    return out
