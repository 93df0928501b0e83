"""Run: .venv/bin/pytest tests/unit/test_export_structures.py

``torchship.export.export`` on models of every common signature: several named
inputs of INT64 / BOOL / UINT8 / float, outputs as a tensor, tuple, list, dict or
nested (flattened with the documented names), an ExportedProgram; and the
refusals: outputs without a batch dimension, with data-dependent sizes, per-image
lists, and degenerate references (zero, constant, below the floor).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from torchship import tolerance
from torchship.export import ExportError, export, formats
from torchship.export.outputs import flatten


def _config(result: Any) -> dict[str, Any]:
    return json.loads((result.directory.parent / "config.json").read_text())


def _manifest(result: Any) -> dict[str, Any]:
    return json.loads((result.directory / "manifest.json").read_text())


class Nested(nn.Module):
    """Three named inputs of three dtypes; a dict holding a tuple and a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.lin = nn.Linear(8 + 4 + 1, 3)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, pixels: torch.Tensor) -> dict[str, Any]:
        e = self.emb(tokens) * mask.unsqueeze(-1).float()
        h = torch.cat([e.mean(1), pixels.float().mean(1, keepdim=True) / 255, e.sum(2)[:, :4]], dim=1)
        logits = self.lin(h)
        return {"logits": logits, "extra": (logits.softmax(-1), {"embedded": e})}


def test_names_are_the_documented_paths() -> None:
    t = torch.zeros(2, 1)
    assert [n for n, _ in flatten(t)] == ["output"]
    assert [n for n, _ in flatten((t, [t, t]))] == ["output.0", "output.1.0", "output.1.1"]
    assert [n for n, _ in flatten({"out": t, "aux": {"a": t, "b": (t,)}})] == ["out", "aux.a", "aux.b.0"]
    with pytest.raises(ValueError, match=r"aux is a str; outputs must be tensors"):
        flatten({"out": t, "aux": "text"})


def test_named_integer_bool_uint8_inputs_and_nested_dict_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Nested().eval()
    example = {
        "tokens": torch.randint(0, 50, (2, 5)),
        "mask": torch.ones(2, 5, dtype=torch.bool),
        "pixels": torch.randint(0, 256, (2, 6), dtype=torch.uint8),
    }
    result = export(
        model, example, name="nested", repository=tmp_path, max_batch_size=8, formats=["torchscript", "onnx"]
    )
    config = _config(result)
    assert [(i["name"], i["datatype"], i["shape"]) for i in config["inputs"]] == [
        ("tokens", "INT64", [-1, 5]),
        ("mask", "BOOL", [-1, 5]),
        ("pixels", "UINT8", [-1, 6]),
    ]
    lo, hi = config["inputs"][0]["value_range"]
    assert 0 <= lo <= hi <= 49, "integer inputs are drawn from the example's range"
    assert [(o["name"], o["shape"]) for o in config["outputs"]] == [
        ("logits", [-1, 3]),
        ("extra.0", [-1, 3]),
        ("extra.1.embedded", [-1, 5, 8]),
    ]
    assert {v["format"]: v["verification"]["ok"] for v in config["variants"]} == {"torchscript": True, "onnx": True}
    x = [torch.randint(0, 50, (4, 5)), torch.rand(4, 5) > 0.5, torch.randint(0, 256, (4, 6), dtype=torch.uint8)]
    with torch.no_grad():
        expected = [t for _, t in flatten(model(*x))]
    for fmt in ("torchscript", "onnx"):
        got = formats.LOADERS[fmt](result.directory / formats.artifact_name(fmt), "cpu")(*x)
        for g, e in zip(got, expected, strict=True):
            tolerance.assert_close(g, e, tolerance.tolerance(fmt), f"nested {fmt}")


class TupleOfList(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        y = self.conv(image)
        return y, [y.mean((2, 3)), y.amax((2, 3))]


def test_tuple_and_list_outputs_with_dynamic_height_and_width(tmp_path: Path) -> None:
    torch.manual_seed(0)
    result = export(
        TupleOfList().eval(),
        torch.randn(1, 3, 16, 12),
        name="tuple_list",
        repository=tmp_path,
        max_batch_size=4,
        dynamic={"image": [2, 3]},
        formats=["torchscript", "onnx"],
    )
    config = _config(result)
    assert config["inputs"][0]["shape"] == [-1, 3, -1, -1]
    assert [(o["name"], o["shape"]) for o in config["outputs"]] == [
        ("output.0", [-1, 4, -1, -1]),  # follows the input's H and W
        ("output.1.0", [-1, 4]),
        ("output.1.1", [-1, 4]),
    ]
    assert {r.sample_shape for r in result.rows} == {"3x16x12", "3x32x24"}


def test_declared_names_and_an_exported_program(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TupleOfList().eval()
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(model, (torch.randn(2, 3, 8, 8),), dynamic_shapes=({0: batch},))
    result = export(
        program,
        torch.randn(1, 3, 8, 8),
        name="program",
        repository=tmp_path,
        max_batch_size=8,
        outputs=["features", "mean", "max"],
        formats=["onnx"],
    )
    config = _config(result)
    assert [i["name"] for i in config["inputs"]] == ["image"]  # the program's own input name
    assert [o["name"] for o in config["outputs"]] == ["features", "mean", "max"]
    static = torch.export.export(model, (torch.randn(2, 3, 8, 8),))
    with pytest.raises(ExportError, match=r"input 'image' has a fixed batch size; export it with dynamic_shapes"):
        export(static, torch.randn(1, 3, 8, 8), name="static", repository=tmp_path, max_batch_size=8)
    with pytest.raises(ExportError, match=r"returned 3 output\(s\) \(output.0, output.1.0, output.1.1\); 2 are"):
        export(model, torch.randn(1, 3, 8, 8), name="m", repository=tmp_path, max_batch_size=2, outputs=["a", "b"])


class NoBatch(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": x * 2, "total": x.sum()}


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x[x > 0]


class PerImage(nn.Module):
    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return [{"boxes": row[row > 0].reshape(-1, 1)} for row in x]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (NoBatch(), r"output 'total' has shape \[\] at batch \d+: it has no batch dimension"),
        (DataDependent(), r"output 'output.1' has data-dependent sizes: .*PaddedDetections"),
        (PerImage(), r"the output is a list with one entry per input row .*PaddedDetections"),
    ],
)
def test_outputs_the_server_cannot_batch_are_refused_by_name(model: nn.Module, message: str, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=message):
        export(model, torch.randn(1, 6), name="bad", repository=tmp_path, max_batch_size=4, formats=["torchscript"])
    assert not (tmp_path / "bad").exists()


class Zero(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 3)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class Constant(Zero):
    def __init__(self) -> None:
        super().__init__()
        nn.init.constant_(self.head.bias, 0.5)  # a zero-initialised weight: the input never reaches the output


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x) * 1e-12  # random-init EfficientNet-B0's logits were ~1e-14


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (Zero(), "all zero for every verification input"),
        (Constant(), "the same for every random input"),
        (Tiny(), "below the floor 0.001"),
    ],
)
def test_degenerate_references_fail_export_unless_allowed(model: nn.Module, reason: str, tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"name": "degenerate", "max_batch_size": 4, "formats": ["torchscript"]}
    with pytest.raises(ExportError, match=rf"eager reference is degenerate.*output 'output' is {reason}"):
        export(model.eval(), torch.randn(1, 6), repository=tmp_path, **kwargs)
    assert not (tmp_path / "degenerate").exists()
    result = export(model.eval(), torch.randn(1, 6), repository=tmp_path, allow_degenerate=["output"], **kwargs)
    assert reason in _manifest(result)["degenerate_outputs"]["output"]


def test_near_zero_outputs_are_compared_at_their_own_scale() -> None:
    expected = torch.tensor([1e-14, -2e-14, 3e-14])
    unrelated = torch.tensor([-3e-14, 1e-14, 0.0])
    c = tolerance.compare(unrelated, expected, tolerance.tolerance("torchscript"))
    assert not c.ok and c.scale == pytest.approx(3e-14), "two different near-zero tensors do not pass as equal"
    assert tolerance.compare(expected * (1 + 1e-7), expected, tolerance.tolerance("torchscript")).ok
    big = torch.tensor([110.0, -3.0])
    assert tolerance.compare(big + 5e-4, big, tolerance.tolerance("torchscript")).ok  # 4.5e-6 of the magnitude


def test_detections_are_compared_as_sets_not_by_position() -> None:
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 40.0], [0.0, 0.0, 0.0, 0.0]]])
    scores, labels, count = torch.tensor([[0.9, 0.9, 0.0]]), torch.tensor([[1, 2, 0]]), torch.tensor([2])
    swapped = (boxes[:, [1, 0, 2]] + 1e-5, scores[:, [1, 0, 2]], labels[:, [1, 0, 2]], count)
    c = tolerance.compare_detections(swapped, (boxes, scores, labels, count), 1e-5)
    assert c.ok and c.matched == 2 and c.unmatched == 0 and c.min_iou > tolerance.DETECTION_IOU
    moved = (boxes + torch.tensor([5.0, 0.0, 5.0, 0.0]), scores, labels, count)
    assert not tolerance.compare_detections(moved, (boxes, scores, labels, count), 1e-5).ok
    relabelled = (boxes, scores, torch.tensor([[2, 1, 0]]), count)
    c = tolerance.compare_detections(relabelled, (boxes, scores, labels, count), 1e-5)
    assert not c.ok and c.unmatched == 4
    fewer = (boxes, scores, labels, torch.tensor([1]))
    assert tolerance.compare_detections(fewer, (boxes, scores, labels, count), 1e-5).unmatched == 1


class Branchy(nn.Module):
    """Control flow (scripted) and a dict output (flattened by a trace around the scripted module)."""

    def forward(self, images: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
        if bool(scale.sum() > 0):
            return {"y": images * scale, "n": images.sum(1)}
        return {"y": images - scale, "n": images.sum(1)}


def test_a_scripted_dict_model_keeps_its_input_names_in_the_torchscript_schema(tmp_path: Path) -> None:
    """The C++ runtime checks the forward schema's argument names against config.json (issue 13, item 6)."""
    example = {"images": torch.randn(1, 4), "scale": torch.randn(1, 4)}
    result = export(
        Branchy(), example, name="branchy", repository=tmp_path, max_batch_size=4, formats=["torchscript"],
        torchscript="script",
    )  # fmt: skip
    module = formats.jit_load(result.directory / "model.pt")
    assert [a.name for a in module.forward.schema.arguments[1:]] == ["images", "scale"]
    assert [o["name"] for o in _config(result)["outputs"]] == ["y", "n"]
    assert "prim::If" in str(module.graph) or "prim::If" in str(module.model.graph), "both branches survive"
