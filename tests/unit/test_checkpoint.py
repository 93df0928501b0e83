"""Run: .venv/bin/pytest tests/unit/test_checkpoint.py"""

from __future__ import annotations

import json
import warnings
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


# --- weights from files a user has: export --weights, and what is refused -------------------


def test_export_weights_loads_a_plain_state_dict_into_the_registered_architecture(tmp_path: Path) -> None:
    from torchship import models
    from torchship.cli import main

    torch.manual_seed(7)
    state = models.get("net").build().state_dict()
    torch.save(state, tmp_path / "birds.pt")
    repo = tmp_path / "repo"
    argv = ["export", "net", "--weights", str(tmp_path / "birds.pt"), "--repository", str(repo)]
    assert main([*argv, "--formats", "torchscript"]) == 0
    exported = torch.jit.load(str(repo / "net" / "1" / "model.pt")).state_dict()
    assert exported.keys() == state.keys() and all(torch.equal(exported[k], state[k]) for k in state)
    manifest = json.loads((repo / "net" / "1" / "manifest.json").read_text())
    assert manifest["weights"].startswith("state_dict birds.pt (sha256 ")  # never "random-init"
    assert manifest["source_checkpoint"]["weights_file"] == str(tmp_path / "birds.pt")
    assert json.loads((repo / "net" / "config.json").read_text())["weights"] == manifest["weights"]


def test_files_that_are_not_weights_are_refused_saying_why_and_what_to_do(tmp_path: Path) -> None:
    from torchship import models
    from torchship.export.source import resolve

    net = models.get("net").build()
    torch.save(net, tmp_path / "whole.pt")  # a pickled module: loading it would run code
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation
        torch.jit.save(torch.jit.trace(net, torch.randn(1, 3, 32, 32)), tmp_path / "scripted.pt")
    digits_weights = models.get("digits_net").build().state_dict()
    digits_weights["extra.weight"] = torch.zeros(1)
    del digits_weights["conv1.bias"]
    torch.save(digits_weights, tmp_path / "other.pt")

    whole = r"whole\.pt holds pickled Python objects \(torchship\.models\.cifar\.Net\).*weights_only=True"
    for source, weights in (("net", "whole.pt"), ("whole.pt", None)):
        with pytest.raises(ValueError, match=whole + r".*torch\.save\(model\.state_dict\(\), 'weights\.pt'\)"):
            resolve(tmp_path / source if weights is None else source, weights=weights and tmp_path / weights)
    for source, weights in (("net", "scripted.pt"), ("scripted.pt", None)):
        with pytest.raises(ValueError, match=r"scripted\.pt is a torchscript artifact.*`torchship import "):
            resolve(tmp_path / source if weights is None else source, weights=weights and tmp_path / weights)
    with pytest.raises(
        ValueError, match=r"plain\.pt holds a plain state_dict.*torchship export ARCHITECTURE --weights"
    ):
        resolve(tmp_path / "plain.pt")
    with pytest.raises(
        ValueError,
        match=r"does not fit Net \(shape mismatch: fc2\.bias \(10,\) vs \(2,\).*"
        r"1 missing: conv1\.bias; 1 unexpected: extra\.weight\)$",
    ):
        resolve("net", weights=tmp_path / "other.pt")
    with pytest.raises(ValueError, match="--weights goes with a registered architecture's name"):
        resolve(tmp_path / "plain.pt", weights=tmp_path / "plain.pt")
