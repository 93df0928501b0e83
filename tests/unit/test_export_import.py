"""Run: .venv/bin/pytest tests/unit/test_export_import.py

``torchship import`` round-trips files written by plain ``torch.jit.save``,
``torch.onnx.export`` and ``torch._inductor.aoti_compile_and_package``: config.json
from the file's own signature, the file run in every runtime that loads it,
independent runtimes compared with each other, and a manifest that says there was
no eager reference. Values are also checked here against the eager model the
file was made from, which the import itself never sees.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from torchship import tolerance
from torchship.cli import main
from torchship.export import ExportError, formats
from torchship.export.importer import import_artifact
from torchship.export.outputs import flatten


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.conv(image)
        return {"features": y, "pooled": y.mean((2, 3))}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return TwoHeads().eval()


def _config(directory: Path) -> dict[str, Any]:
    return json.loads((directory.parent / "config.json").read_text())


def _manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "manifest.json").read_text())


def _matches_eager(model: nn.Module, directory: Path, fmt: str, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected = [t for _, t in flatten(model(x))]
    got = formats.LOADERS[fmt](directory / formats.artifact_name(fmt), "cpu")(x)
    for g, e in zip(got, expected, strict=True):
        tolerance.assert_close(g, e, tolerance.tolerance(fmt), f"imported {fmt}")


def test_a_torchscript_file_keeps_its_argument_names_and_dict_keys(model: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "two_heads.pt"
    torch.jit.save(torch.jit.trace(model, torch.randn(2, 3, 16, 16), strict=False), str(path))
    directory, rows, _ = import_artifact(
        path, tmp_path / "repo", name="two_heads", inputs={"image": ((1, 3, 16, 16), "")}
    )
    config = _config(directory)
    assert [i["name"] for i in config["inputs"]] == ["image"]  # the forward schema's argument name
    assert [(o["name"], o["shape"]) for o in config["outputs"]] == [("features", [-1, 4, 16, 16]), ("pooled", [-1, 4])]
    assert config["variants"][0]["format"] == "torchscript" and config["variants"][0]["verification"]["ok"]
    manifest = _manifest(directory)
    assert manifest["eager_reference"] is None and manifest["reference"].startswith("none: no eager model")
    ran = {c["check"]: c["ok"] for c in manifest["checks"]}
    assert ran["ONNX Runtime on an ONNX export of it (independent kernels)"] is True
    assert ran["C++ runtime (torchship._C), the same file"] is True  # it returns a dict: served flattened
    assert {r.format for r in rows} >= {"onnx"}
    assert sorted(p.name for p in directory.iterdir()) == ["manifest.json", "model.pt"]
    _matches_eager(model, directory, "torchscript", torch.randn(5, 3, 16, 16))


class OneAtATime(nn.Module):
    """Takes exactly one image (a fixed view): only max_batch_size 1 serves it."""

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"flat": image.view(1, 48), "total": image.sum((1, 2, 3))}


def test_a_file_that_takes_one_item_imports_with_max_batch_size_1(tmp_path: Path) -> None:
    """Flattening its dict output traces it at batch 1, not the usual example batch of 2 (which it refuses)."""
    path = tmp_path / "one.pt"
    torch.jit.save(torch.jit.script(OneAtATime()), str(path))
    directory, _, _ = import_artifact(
        path, tmp_path / "repo", name="one", inputs={"image": ((1, 3, 4, 4), "")}, max_batch_size=1
    )
    config = _config(directory)
    assert config["max_batch_size"] == 1 and config["variants"][0]["verification"]["ok"]
    _matches_eager(OneAtATime(), directory, "torchscript", torch.randn(1, 3, 4, 4))


def test_an_onnx_file_keeps_its_names_and_dynamic_dims(model: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "two_heads.onnx"
    dims = {0: torch.export.Dim("batch", max=64), 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    torch.onnx.export(
        model, (torch.randn(2, 3, 16, 16),), str(path), input_names=["pixels"], output_names=["f", "p"],
        dynamic_shapes=(dims,), dynamo=True, verbose=False,
    )  # fmt: skip
    with pytest.raises(ExportError, match=r"input 'pixels': its shape \[-1, 3, -1, -1\] has unnamed sizes; give"):
        import_artifact(path, tmp_path / "repo", name="onnx_heads")
    directory, _, _ = import_artifact(
        path, tmp_path / "repo", name="onnx_heads", inputs={"pixels": ((1, 3, 16, 16), "")}
    )
    config = _config(directory)
    assert [(i["name"], i["datatype"], i["shape"]) for i in config["inputs"]] == [("pixels", "FP32", [-1, 3, -1, -1])]
    assert [(o["name"], o["shape"]) for o in config["outputs"]] == [("f", [-1, 4, -1, -1]), ("p", [-1, 4])]
    ran = {c["check"]: c for c in _manifest(directory)["checks"]}
    assert ran["C++ runtime / torchship-server"] == {
        "check": "C++ runtime / torchship-server",
        "ok": None,
        "why_not": "they do not run ONNX",
    }
    _matches_eager(model, directory, "onnx", torch.randn(3, 3, 20, 12))


def test_files_that_cannot_be_served_are_refused(model: nn.Module, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed.onnx"
    torch.onnx.export(model, (torch.randn(2, 3, 8, 8),), str(fixed), dynamo=True, verbose=False)
    with pytest.raises(ExportError, match=r"fixed batch size 2; re-export it with a dynamic first dimension"):
        import_artifact(fixed, tmp_path / "repo", name="fixed")
    with pytest.raises(ExportError, match=r"not a file ending in"):
        import_artifact(tmp_path / "model.tflite", tmp_path / "repo", name="x")
    zero = nn.Linear(4, 2)
    nn.init.zeros_(zero.weight)
    nn.init.zeros_(zero.bias)
    path = tmp_path / "zero.pt"
    torch.jit.save(torch.jit.script(zero), str(path))
    with pytest.raises(ExportError, match=r"output 'output' is all zero for every verification input"):
        import_artifact(path, tmp_path / "repo", name="zero", inputs={"input": ((1, 4), "")})
    assert not (tmp_path / "repo" / "zero").exists()


def test_the_command_line(model: nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "two_heads.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    argv = ["import", str(path), "--name", "cli_heads", "--repository", str(tmp_path / "repo"), "--max-batch-size", "4"]
    assert main([*argv, "--input", "image=1x3x8x8"]) == 0
    out = capsys.readouterr().out
    assert "ok  ONNX Runtime on an ONNX export of it (independent kernels)" in out and "no eager reference" in out
    assert main([*argv, "--input", "picture=1x3x8x8"]) == 1
    assert "--input for unknown input(s) ['picture']; the artifact takes ['image']" in capsys.readouterr().err


@pytest.mark.slow
def test_an_aoti_package_round_trips(model: nn.Module, tmp_path: Path) -> None:
    import torch._inductor

    program = torch.export.export(
        model, (torch.randn(2, 3, 16, 16),), dynamic_shapes=({0: torch.export.Dim("batch", max=16)},)
    )
    path = Path(torch._inductor.aoti_compile_and_package(program, package_path=str(tmp_path / "heads.pt2")))
    directory, _, _ = import_artifact(
        path, tmp_path / "repo", name="aoti_heads", inputs={"input": ((1, 3, 16, 16), "")}
    )
    config = _config(directory)
    assert [o["shape"] for o in config["outputs"]] == [[-1, 4, 16, 16], [-1, 4]]
    assert config["variants"][0]["file"] == "model.pt2"
    _matches_eager(model, directory, "pt2", torch.randn(3, 3, 16, 16))
