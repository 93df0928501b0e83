"""The chapter 11-13 training apps: metrics against hand-computed values, a few steps that learn, runs end to end.

Run: .venv/bin/python -m pytest tests/part2/test_luna_training.py -q
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from torchship.data.luna.cache import CtSource
from torchship.data.luna.candidates import candidate_info_list
from torchship.data.luna.layout import LunaLayout
from torchship.models.luna import LunaModel
from torchship.training.checkpoint import build_model, load_checkpoint, make_checkpoint, save_checkpoint
from torchship.training.luna_classifier import (
    LunaClassifierApp,
    LunaClassifierConfig,
    finetune_model,
    format_metrics,
    metrics_from_rows,
)
from torchship.training.luna_segmentation import (
    LunaSegmentationApp,
    LunaSegmentationConfig,
    dice_loss,
    segmentation_metrics,
)
from torchship.training.luna_util import enumerate_with_estimate


def test_classification_metrics_by_hand() -> None:
    # 3 negatives (one called positive), 2 positives (one found).
    rows = torch.tensor(
        [
            [0.0, 0.0, 0.0, 1.0, 1.0],  # label
            [0.1, 0.7, 0.5, 0.9, 0.2],  # positive probability (0.5 is negative: "> 0.5" is positive)
            [0.2, 1.0, 0.6, 0.1, 1.5],  # loss
        ]
    )
    m, c = metrics_from_rows(rows)
    assert c == {"neg_correct": 2, "neg_count": 3, "pos_correct": 1, "pos_count": 2}
    assert m["loss/all"] == pytest.approx(3.4 / 5)
    assert m["loss/ben"] == pytest.approx(1.8 / 3)
    assert m["loss/mal"] == pytest.approx(0.8)
    assert m["correct/all"] == pytest.approx(60.0)
    assert m["correct/ben"] == pytest.approx(200 / 3)
    assert m["correct/mal"] == pytest.approx(50.0)
    assert m["pr/precision"] == pytest.approx(0.5)  # TP 1, FP 1
    assert m["pr/recall"] == pytest.approx(0.5)  # TP 1, FN 1
    assert m["pr/f1_score"] == pytest.approx(0.5)
    lines = format_metrics(3, "val", m, c)
    assert lines[2] == "E3 val_mal  0.8000 loss,  50.0% correct (1 of 2)"


def test_no_positive_predictions_give_nan_precision() -> None:
    rows = torch.tensor([[0.0, 1.0], [0.1, 0.2], [0.1, 2.0]])
    m, _ = metrics_from_rows(rows)
    assert math.isnan(m["pr/precision"]) and m["pr/recall"] == 0.0 and math.isnan(m["pr/f1_score"])


def test_dice_loss_by_hand() -> None:
    label = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    assert dice_loss(label, label).tolist() == pytest.approx([0.0, 0.0])  # identical; empty vs empty
    prediction = torch.tensor([[[[0.5, 1.0], [1.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    # sample 0: correct 1.5, prediction 2.5, label 2: 1 - (3 + 1) / (4.5 + 1)
    assert float(dice_loss(prediction, label)[0]) == pytest.approx(1 - 4 / 5.5)


def test_segmentation_metrics_by_hand() -> None:
    rows = torch.zeros(5, 2)
    rows[0] = torch.tensor([0.2, 0.4])  # dice loss
    rows[1] = torch.tensor([6.0, 2.0])  # tp
    rows[2] = torch.tensor([2.0, 0.0])  # fn
    rows[3] = torch.tensor([4.0, 4.0])  # fp
    rows[4] = torch.tensor([0.1, 0.3])  # false-negative dice loss
    m = segmentation_metrics(rows)
    assert m["percent_all/tp"] == pytest.approx(80.0) and m["percent_all/fp"] == pytest.approx(80.0)
    assert m["pr/precision"] == pytest.approx(8 / 16) and m["pr/recall"] == pytest.approx(0.8)
    f1 = 2 * 0.5 * 0.8 / 1.3
    assert m["pr/f1_score"] == pytest.approx(f1)
    assert m["score"] == pytest.approx(1 - 0.2 + f1 - 0.8 * 0.01 - 0.3 * 0.0001)


def test_enumerate_with_estimate_logs_at_powers_of_two() -> None:
    lines: list[str] = []
    items = list(enumerate_with_estimate(range(40), "E1 Training", backoff=2, emit=lines.append))
    assert items == list(enumerate(range(40)))
    assert [line.split()[2] for line in lines] == ["----/40,", "4/40,", "8/40,", "16/40,", "32/40,", "----/40,"]
    assert "done at" in lines[1]


def _crops(tiny_luna: Path) -> tuple[torch.Tensor, torch.Tensor]:
    layout = LunaLayout(tiny_luna)
    candidates = candidate_info_list(layout)
    pos = [c for c in candidates if c.is_nodule][:2]
    neg = [c for c in candidates if not c.is_nodule][:2]
    source = CtSource(layout, max_cts=3)
    chunks = [source.ct(c.series_uid).get_raw_candidate(c.center_xyz, (32, 48, 48))[0] for c in pos + neg]
    return torch.from_numpy(np.stack(chunks)).unsqueeze(1), torch.tensor([1] * len(pos) + [0] * len(neg))


def test_a_few_classifier_steps_lower_the_loss(tiny_luna: Path) -> None:
    chunks, labels = _crops(tiny_luna)
    torch.manual_seed(0)
    model = LunaModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.99)  # the book's
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(chunks)[0], labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_classifier_app_runs_and_writes_what_it_promises(tiny_luna: Path, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    cfg = LunaClassifierConfig(
        data_dir=str(tiny_luna),
        epochs=1,
        batch_size=4,
        epoch_size=8,
        balanced=True,
        val_stride=3,
        cache_dir=str(tmp_path / "cache"),
        max_cts_in_memory=3,
        tb_dir=str(tmp_path / "runs"),
        device="cpu",
        comment="test",
    )
    result = LunaClassifierApp(cfg).main(out=tmp_path / "nodule.ckpt")
    val = result.history[0]["val"]
    counts = result.history[0]["val_counts"]
    assert counts["pos_count"] + counts["neg_count"] == len(LunaClassifierApp(cfg).val_ds)
    assert val["correct/all"] == pytest.approx(
        100 * (counts["pos_correct"] + counts["neg_correct"]) / (counts["pos_count"] + counts["neg_count"])
    )
    assert result.history[0]["trn_counts"]["pos_count"] == 4  # balanced: every other sample is a nodule
    ckpt = load_checkpoint(tmp_path / "nodule.ckpt")
    assert ckpt["labels"] == ["non_nodule", "nodule"] and ckpt["task"] == "nodule"
    assert isinstance(build_model(ckpt), LunaModel)
    runs = sorted(p.name for p in (tmp_path / "runs" / "p2ch12").iterdir())
    assert len(runs) == 2 and runs[0].endswith("-trn_cls-test") and runs[1].endswith("-val_cls-test")
    assert any("E1 val_mal" in r.message for r in caplog.records)


def test_finetune_loads_all_but_the_head_and_freezes(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = LunaModel()
    path = save_checkpoint(tmp_path / "src.ckpt", make_checkpoint("luna_classifier", source))
    torch.manual_seed(2)
    model = LunaModel()
    head_before = model.head_linear.weight.clone()
    assert finetune_model(model, str(path), depth=2) == ["block4", "head_linear"]
    torch.testing.assert_close(model.block1.conv1.weight, source.block1.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.head_linear.weight, head_before, rtol=0, atol=0)  # the head starts fresh
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"block4", "head_linear"}
    with pytest.raises(ValueError, match="exceeds the model's 6 blocks"):
        finetune_model(LunaModel(), str(path), depth=7)


def test_segmentation_app_learns_and_saves_the_best(tiny_luna: Path, tmp_path: Path) -> None:
    cfg = LunaSegmentationConfig(
        data_dir=str(tiny_luna),
        epochs=2,
        batch_size=4,
        epoch_size=8,
        val_stride=2,
        val_cadence=1,
        max_cts_in_memory=3,
        tb_dir=str(tmp_path / "runs"),
        device="cpu",
        images=2,
    )
    app = LunaSegmentationApp(cfg)
    assert not set(app.train_series) & set(app.val_series)
    # Without annotations in the validation series there is nothing to validate on: a clear error.
    bare = tmp_path / "bare"
    shutil.copytree(tiny_luna, bare)
    for name in ("annotations.csv", "annotations_with_malignancy.csv"):
        lines = (bare / name).read_text().splitlines(keepends=True)
        (bare / name).write_text("".join(line for line in lines if line.split(",")[0] not in app.val_series))
    with pytest.raises(ValueError, match="hold no annotated nodule"):
        LunaSegmentationApp(LunaSegmentationConfig(data_dir=str(bare), val_stride=2, tb_dir=None))
    result = app.main(out=tmp_path / "seg.ckpt")
    first, last = result.history[0]["trn"], result.history[-1]["trn"]
    assert last["loss/all"] < first["loss/all"]
    assert result.best_score == max(h["val"]["score"] for h in result.history)
    assert (tmp_path / "seg.best.ckpt").is_file()
    assert load_checkpoint(tmp_path / "seg.ckpt")["model"] == "luna_segmentation"
