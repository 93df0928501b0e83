"""int8 variants at export (docs/quantization.md): calibrated, verified against fp32 with meaning, served.

The trained digits model is quantized with its own data set (calibration on the training split, the
validation split held out): int8 held-out accuracy within 1 point of fp32's and top-1 agreement are
asserted from the manifest and recomputed here from the artifact. The C++ runtime and torchship-server
load the variant with precision int8 and answer what the artifact answers in Python. ResNet-18 (a
registry model, random-init with BatchNorm statistics from the calibration images) in both flows is slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from torchship import tolerance
from torchship.cli import main
from torchship.data.digits import digits
from torchship.export import ExportError, export_checkpoint, export_registry_model, formats
from torchship.export.calibration import load, write_sample_crops
from torchship.models.registry import TensorSpec

IMAGE = [TensorSpec("image", (-1, 3, 32, 32), "FP32")]


@pytest.fixture(scope="module")
def digits_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits net trained 2 epochs, exported as TorchScript with --quantize int8 (calibration: its data set)."""
    root = tmp_path_factory.mktemp("digits_int8")
    ckpt = root / "digits_net.ckpt"
    train = ["train", "digits-net", "--epochs", "2", "--device", "cpu", "--no-progress", "--out", str(ckpt)]
    assert main([*train, "--tb-dir", str(root / "runs")]) == 0
    export = ["export", str(ckpt), "--repository", str(root / "repo"), "--formats", "torchscript"]
    assert main([*export, "--quantize", "int8", "--max-batch-size", "64"]) == 0
    return root / "repo"


def test_trained_digits_int8_keeps_its_accuracy(digits_repo: Path) -> None:
    config = json.loads((digits_repo / "digits_net" / "config.json").read_text())
    int8 = {v["file"]: v for v in config["variants"]}["model.int8.pt"]
    assert (int8["format"], int8["precision"], int8["verification"]["ok"]) == ("torchscript", "int8", True)
    manifest = json.loads((digits_repo / "digits_net" / "1" / "manifest.json").read_text())
    q = manifest["quantization"]
    assert (q["precision"], q["backend"], q["calibration"]["kind"]) == ("int8", "x86", "dataset")
    assert "sklearn.datasets.load_digits" in q["calibration"]["source"]
    result = q["verification"]["torchscript.int8"]
    assert result["held_out_accuracy"]["fp32"] >= 0.9, "the checkpoint must be trained for accuracy to mean anything"
    assert result["held_out_accuracy"]["fp32"] - result["held_out_accuracy"]["int8"] <= 0.01
    assert result["top1_agreement"] >= tolerance.int8_agreement("digits_net")
    artifact = {a["file"]: a for a in manifest["artifacts"]}["model.int8.pt"]
    assert 0 < artifact["bytes"] < {a["file"]: a for a in manifest["artifacts"]}["model.pt"]["bytes"]

    # Recomputed from the artifact on the validation split (inputs the calibration did not see).
    val = digits(val_fraction=0.2, split_seed=0).val
    (fp32,) = formats.load_torchscript(digits_repo / "digits_net" / "1" / "model.pt")(val.images)
    (got,) = formats.load_torchscript(digits_repo / "digits_net" / "1" / "model.int8.pt")(val.images)
    assert got.dtype == torch.float32, "the wire contract stays fp32"
    assert 0 < (got - fp32).abs().max() <= tolerance.int8_tolerance("digits_net") * fp32.abs().max()
    accuracy = {k: float((v.argmax(1) == val.labels).float().mean()) for k, v in (("fp32", fp32), ("int8", got))}
    assert accuracy["fp32"] - accuracy["int8"] <= 0.01, accuracy
    assert accuracy["int8"] == pytest.approx(result["held_out_accuracy"]["int8"])


def test_runtime_and_server_load_the_int8_variant(digits_repo: Path, tmp_path: Path) -> None:
    from torchship.client import Client
    from torchship.runtime import Runtime
    from torchship.server_process import ServerProcess

    x = digits(val_fraction=0.2, split_seed=0).val.images[:16]
    (want,) = formats.load_torchscript(digits_repo / "digits_net" / "1" / "model.int8.pt")(x)
    with Runtime(digits_repo, precision="int8") as rt:
        native = rt.model("digits_net").infer(x)
    tolerance.assert_close(native, want, tolerance.SAME_ARTIFACT_TOL, "model.int8.pt in C++ and Python")
    server = ServerProcess(digits_repo, "--precision", "int8", log_path=tmp_path / "serve.log").start()
    try:
        with Client(server.url) as client:
            served = client.infer("digits_net", x, binary_inputs=True, binary_outputs=True)["logits"]
    finally:
        server.stop()
    tolerance.assert_close(served, want, tolerance.SAME_ARTIFACT_TOL, "model.int8.pt served and in Python")


def test_precision_int8_without_an_int8_variant_is_a_clear_error(tmp_path: Path) -> None:
    from torchship.runtime import LoadError, Runtime

    export_registry_model("digits_net", tmp_path, ["torchscript"], max_batch_size=4)
    with pytest.raises(LoadError, match=r"int8"):
        Runtime(tmp_path, precision="int8")


def test_a_calibration_that_does_not_fit_the_input_is_refused(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((16, 1, 28, 28), np.float32))
    with pytest.raises(ExportError, match=r"shape \[16, 1, 28, 28\]; input 'image' takes \[N, 3, 32, 32\]"):
        export_registry_model("digits_net", tmp_path, ["torchscript"], quantize="int8", calibration=str(wrong))
    ints = tmp_path / "ints.npy"
    np.save(ints, np.zeros((16, 3, 32, 32), np.int64))
    with pytest.raises(ExportError, match=r"holds torch.int64 values; input 'image' takes FP32"):
        export_registry_model("digits_net", tmp_path, ["torchscript"], quantize="int8", calibration=str(ints))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExportError, match=r"holds no images"):
        export_registry_model("digits_net", tmp_path, ["torchscript"], quantize="int8", calibration=str(empty))
    with pytest.raises(ExportError, match=r"neither 'dataset', 'random', a directory of images nor a .npy"):
        export_registry_model("digits_net", tmp_path, ["torchscript"], quantize="int8", calibration="imagenet")
    with pytest.raises(ExportError, match=r"declares no data set|no recipe loads"):  # resnet18: ImageNet, not here
        export_registry_model("resnet18", tmp_path, ["torchscript"], quantize="int8")
    with pytest.raises(ExportError, match=r"makes TorchScript and .pt2 variants"):
        export_registry_model("digits_net", tmp_path, ["onnx"], quantize="int8", calibration="random")
    assert not any(tmp_path.glob("*/config.json")), "nothing written"


def test_calibration_sources_are_split_and_labelled(tmp_path: Path) -> None:
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).standard_normal((20, 3, 32, 32)).astype(np.float32))
    cal = load(str(data), IMAGE, [(1, 3, 32, 32)])
    assert (len(cal.calibrate), len(cal.held_out), cal.kind) == (10, 10, "npy")
    assert not any(torch.equal(a, b) for a in cal.calibrate for b in cal.held_out), "held-out inputs are unseen"
    random = load("random", IMAGE, [(1, 3, 32, 32)])
    assert random.manifest()["source"].startswith("random inputs") and random.labels is None
    write_sample_crops(tmp_path / "crops", count=8, size=48)
    images = load(
        str(tmp_path / "crops"), IMAGE, [(1, 3, 32, 32)], {"normalize": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    )
    assert images.calibrate.shape == (4, 3, 32, 32) and images.calibrate.abs().max() <= 1.0
    with pytest.raises(ValueError, match=r"one float input; this model takes tokens INT64"):
        load("random", [TensorSpec("tokens", (-1, 8), "INT64")], [(1, 8)])


@pytest.mark.slow
def test_resnet18_int8_both_flows_agree_with_fp32(tmp_path: Path) -> None:
    crops = write_sample_crops(tmp_path / "crops", count=48)
    result = export_registry_model(
        "resnet18", tmp_path / "repo", ["torchscript", "pt2"], quantize="int8", calibration=str(crops[0].parent)
    )
    manifest = json.loads((result.directory / "manifest.json").read_text())
    assert "BatchNorm statistics from images in" in manifest["weights"]
    for key in ("torchscript.int8", "pt2.int8"):
        check = manifest["quantization"]["verification"][key]
        assert check["top1_agreement"] >= tolerance.int8_agreement("resnet18"), (key, check)
        assert check["max_abs"] <= check["bound"]
    assert manifest["export"]["pt2.int8"]["torch_export"] == "strict"
    assert manifest["export"]["pt2.int8"]["inductor_freezing"] is True

    from torchship.runtime import Runtime

    x = torch.randn(3, 3, 224, 224)
    (want,) = formats.load_pt2(result.directory / "model.int8.pt2")(x)
    with Runtime(tmp_path / "repo", format="pt2", precision="int8") as rt:
        native = rt.model("resnet18").infer(x)
    tolerance.assert_close(native, want, tolerance.SAME_ARTIFACT_TOL, "model.int8.pt2 in C++ and Python")


def test_an_int8_variant_outside_its_bound_is_refused_and_nothing_written(
    digits_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(tolerance.INT8_TOL, "digits_net", 1e-6)  # int8 cannot come that close: the check must bite
    ckpt = digits_repo.parent / "digits_net.ckpt"
    with pytest.raises(ExportError, match=r"(?s)verification against eager PyTorch.*torchscript.int8.*FAIL"):
        export_checkpoint(ckpt, tmp_path / "repo", ["torchscript"], quantize="int8")
    assert not (tmp_path / "repo").exists()


@pytest.mark.slow
def test_trained_digits_int8_pt2_through_pt2e_is_verified_and_served(digits_repo: Path, tmp_path: Path) -> None:
    from torchship.runtime import Runtime

    ckpt = digits_repo.parent / "digits_net.ckpt"
    result = export_checkpoint(ckpt, tmp_path / "repo", ["pt2"], quantize="int8", max_batch_size=64)
    check = json.loads((result.directory / "manifest.json").read_text())["quantization"]["verification"]["pt2.int8"]
    assert check["top1_agreement"] >= tolerance.int8_agreement("digits_net")
    assert check["held_out_accuracy"]["fp32"] - check["held_out_accuracy"]["int8"] <= 0.01
    x = digits(val_fraction=0.2, split_seed=0).val.images[:5]  # a batch size it was not verified at
    (want,) = formats.load_pt2(result.directory / "model.int8.pt2")(x)
    with Runtime(tmp_path / "repo", format="pt2", precision="int8") as rt:
        native = rt.model("digits_net").infer(x)
    tolerance.assert_close(native, want, tolerance.SAME_ARTIFACT_TOL, "model.int8.pt2 in C++ and Python")
