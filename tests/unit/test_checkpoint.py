"""Run: .venv/bin/pytest tests/unit/test_checkpoint.py"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchship.training.checkpoint import CheckpointError, build_model, load_checkpoint


def test_round_trip_rebuilds_the_same_model(thermometer_checkpoint: Path) -> None:
    ckpt = load_checkpoint(thermometer_checkpoint)
    assert ckpt["model"] == "thermometer_linear"
    assert ckpt["inputs"] == [{"name": "t_u", "datatype": "FP32", "shape": [-1, 1]}]
    model = build_model(ckpt)
    x = torch.tensor([[35.7], [81.9]])
    expected = ckpt["state_dict"]["w"] * (x * 0.1) + ckpt["state_dict"]["b"]
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_corrupt_and_foreign_files_give_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"model_state": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a torchship checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")
