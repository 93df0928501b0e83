"""Run: .venv/bin/python -m pytest tests/unit/test_metrics.py -q

Chapter 12's precision, recall and F1, checked against the counts and values
the book prints for its balanced LUNA classifier (S4:9581-9636), and the
``nan`` it prints when a denominator is zero (S4:9335-9345).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from torchship.training.metrics import BinaryCounts, classification_metrics, confusion_matrix, one_vs_rest

# (malignant correct, malignant total, benign correct, benign total) -> (precision, recall, f1, % correct)
BOOK_LINES = [
    pytest.param((33344, 50000, 38798, 50000), (0.7485, 0.6669, 0.7053, 72.1), id="E1-trn"),
    pytest.param((117, 136, 51866, 54971), (0.0363, 0.8603, 0.0697, 94.3), id="E1-val"),
    pytest.param((42439, 50000, 45005, 50000), (0.8947, 0.8488, 0.8711, 87.4), id="E2-trn"),
    pytest.param((119, 136, 50101, 54971), (0.0239, 0.8750, 0.0464, 91.1), id="E2-val"),
    pytest.param((126, 136, 51588, 54971), (0.0359, 0.9265, 0.0691, 93.8), id="E5-val"),
    pytest.param((122, 136, 53794, 54971), (0.0939, 0.8971, 0.1700, 97.8), id="E10-val"),
    pytest.param((49559, 50000, 49416, 50000), (0.9884, 0.9912, 0.9898, 99.0), id="E20-trn"),
    pytest.param((118, 136, 54279, 54971), (0.1457, 0.8676, 0.2495, 98.7), id="E20-val"),
]


@pytest.mark.parametrize(("counts", "book"), BOOK_LINES)
def test_book_counts_give_the_books_printed_metrics(counts: tuple[int, ...], book: tuple[float, ...]) -> None:
    c = BinaryCounts.from_correct(*counts)
    precision, recall, f1, correct = book
    # The book prints 4 decimals (percentages 1): equal after the same rounding.
    assert round(c.precision, 4) == precision
    assert round(c.recall, 4) == recall
    assert round(c.f1, 4) == f1
    assert round(100 * c.accuracy, 1) == correct


@pytest.mark.parametrize(("counts", "book"), BOOK_LINES)
def test_confusion_matrix_path_agrees_with_the_counts(counts: tuple[int, ...], book: tuple[float, ...]) -> None:
    # Benign = class 0 (negative), malignant = class 1 (positive), as the book's label order.
    mal_ok, mal, ben_ok, ben = counts
    matrix = torch.tensor([[ben_ok, ben - ben_ok], [mal - mal_ok, mal_ok]])
    m = classification_metrics(matrix, ["ben", "mal"], loss=0.5)
    precision, recall, f1, correct = book
    assert round(m["pr/precision"], 4) == precision
    assert round(m["pr/recall"], 4) == recall
    assert round(m["pr/f1_score"], 4) == f1
    assert round(m["correct/all"], 1) == correct
    assert m["correct/mal"] == pytest.approx(100 * mal_ok / mal)
    assert m["correct/ben"] == pytest.approx(100 * ben_ok / ben)
    assert m["loss/all"] == 0.5


def test_zero_denominators_give_nan_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Book's unbalanced E1 trn: no malignant predicted right, 8 benign wrong -> 0.0 prc, 0.0 rcl, nan f1.
        trn = BinaryCounts.from_correct(0, 1215, 494735, 494743)
        assert trn.precision == 0.0 and trn.recall == 0.0 and math.isnan(trn.f1)
        # Book's unbalanced E1 val: nothing predicted positive at all -> nan prc, 0.0 rcl, nan f1.
        val = BinaryCounts.from_correct(0, 136, 54971, 54971)
        assert math.isnan(val.precision) and val.recall == 0.0 and math.isnan(val.f1)
        empty = BinaryCounts(0, 0, 0, 0)
        assert all(math.isnan(x) for x in (empty.precision, empty.recall, empty.f1, empty.accuracy))
        m = classification_metrics(torch.zeros(2, 2, dtype=torch.int64))
        assert math.isnan(m["correct/all"]) and math.isnan(m["pr/f1_score"])


def test_confusion_matrix_rows_are_labels_columns_predictions() -> None:
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 2, 0, 2])
    expected = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert torch.equal(confusion_matrix(preds, labels, 3), expected)
    c = one_vs_rest(expected, 2)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 0, 1, 3)


def test_multiclass_metrics_are_macro_averages_of_one_vs_rest() -> None:
    matrix = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    m = classification_metrics(matrix, ["a", "b", "c"])
    precisions = [1 / 2, 1 / 2, 2 / 2]
    recalls = [1 / 2, 1 / 1, 2 / 3]
    f1s = [2 * p * r / (p + r) for p, r in zip(precisions, recalls, strict=True)]
    assert m["pr/precision"] == pytest.approx(sum(precisions) / 3)
    assert m["pr/recall"] == pytest.approx(sum(recalls) / 3)
    assert m["pr/f1_score"] == pytest.approx(sum(f1s) / 3)
    assert m["correct/all"] == pytest.approx(100 * 4 / 6)
    assert m["correct/c"] == pytest.approx(100 * 2 / 3)
    # A class that is never predicted has no precision: the macro average says so instead of hiding it.
    never_b = torch.tensor([[2, 0, 0], [1, 0, 1], [0, 0, 2]])
    assert math.isnan(classification_metrics(never_b)["pr/precision"])
