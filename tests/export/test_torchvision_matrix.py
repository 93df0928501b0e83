"""Run: .venv/bin/pytest tests/export/test_torchvision_matrix.py          (the default part, ~1 minute)
       .venv/bin/pytest tests/export/test_torchvision_matrix.py -m slow  (the rest of the matrix)

torchvision architectures of different families, as a user brings them (random
init made non-degenerate: tv_models.py), through ``torchship.export.export`` ->
torchship-server -> parity with eager PyTorch within the tolerance policy.
TorchScript for every architecture, ONNX and .pt2 for a few; the detection model
(torchvision::nms inside, PaddedDetections outside) is compared as sets of boxes.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import tv_models
from tv_models import ARCHS, Arch

from torchship import tolerance
from torchship.client import Client
from torchship.export import ExportError, ExportResult, export, formats
from torchship.export.outputs import flatten
from torchship.server_process import ServerProcess

pytestmark = pytest.mark.filterwarnings("ignore:RCNN always returns a \\(Losses, Detections\\) tuple in scripting")
DEFAULT = [a for a in ARCHS if not a.slow]
SLOW = [a for a in ARCHS if a.slow and a.name != "fasterrcnn_mobilenet"]
BATCHES = (1, 3)


def _export_all(archs: list[Arch], repo: Path) -> dict[str, tuple[torch.nn.Module, ExportResult]]:
    out = {}
    for arch in archs:
        model = tv_models.build(arch)
        result = export(
            model,
            torch.rand(1, *arch.image),
            name=arch.name,
            repository=repo,
            max_batch_size=arch.max_batch_size,
            formats=arch.formats,
            torchscript=arch.torchscript,
            variants=arch.variants,
        )
        out[arch.name] = (model, result)
    return out


@contextlib.contextmanager
def _served(archs: list[Arch], root: Path) -> Iterator[tuple[dict[str, Any], ServerProcess]]:
    """The architectures exported into one repository, and one server on it."""
    matrix = _export_all(archs, root / "repo")
    server = ServerProcess(root / "repo", "--device", "cpu", log_path=root / "server.log").start()
    try:
        yield matrix, server
    finally:
        assert server.stop() == 0, server.log()


def _eager(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    with torch.no_grad():
        return flatten(model(x))


@pytest.fixture(scope="module")
def default_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], ServerProcess]]:
    with _served(DEFAULT, tmp_path_factory.mktemp("tv")) as served:
        yield served


@pytest.fixture(scope="module")
def slow_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], ServerProcess]]:
    with _served(SLOW, tmp_path_factory.mktemp("tv_slow")) as served:
        yield served


def _config(result: ExportResult) -> dict[str, Any]:
    return json.loads((result.directory.parent / "config.json").read_text())


def _server_parity(
    server: ServerProcess, arch: Arch, model: torch.nn.Module, result: ExportResult
) -> list[tolerance.Comparison]:
    (spec,) = _config(result)["inputs"]
    out = []
    with Client(server.url) as client:
        for batch in BATCHES:
            x = torch.randn(batch, *arch.image, generator=torch.Generator().manual_seed(batch))
            got = client.infer(arch.name, {spec["name"]: x}, binary_inputs=True, binary_outputs=True)
            for name, expected in _eager(model, x):
                c = tolerance.compare(got[name], expected, tolerance.tolerance("server"))
                assert c.ok, f"{arch.name} output {name} at batch {batch}: {c}"
                out.append(c)
    return out


@pytest.mark.parametrize("arch", DEFAULT, ids=lambda a: a.name)
def test_default_matrix_serves_what_eager_computes(arch: Arch, default_served: tuple[dict, ServerProcess]) -> None:
    matrix, server = default_served
    model, result = matrix[arch.name]
    assert all(r.ok for r in result.rows) and {r.format for r in result.rows} == set(arch.formats)
    comparisons = _server_parity(server, arch, model, result)
    assert all(c.scale >= tolerance.REFERENCE_FLOOR for c in comparisons), "the reference is not degenerate"


def test_dict_output_names_and_the_scripted_swin(default_served: tuple[dict, ServerProcess]) -> None:
    matrix, _ = default_served
    _, seg = matrix["lraspp_mobilenet"]
    assert [(o["name"], o["shape"]) for o in _config(seg)["outputs"]] == [("out", [-1, 3, 32, 32])]  # the dict key
    _, swin = matrix["swin"]
    manifest = json.loads((swin.directory / "manifest.json").read_text())
    assert manifest["export"]["torchscript"]["method"] == "script"


def test_random_init_without_calibration_is_caught(tmp_path: Path) -> None:
    """What a user meets first: torchvision's ViT head is zero-initialised, so every logit is 0."""
    arch = tv_models.BY_NAME["vit"]
    torch.manual_seed(0)
    raw = arch.build().eval()
    with pytest.raises(ExportError, match=r"output 'output' is all zero for every verification input"):
        export(raw, torch.rand(1, *arch.image), name="vit_raw", repository=tmp_path, max_batch_size=2)


@pytest.mark.slow
@pytest.mark.parametrize("arch", SLOW, ids=lambda a: a.name)
def test_slow_matrix_serves_what_eager_computes(arch: Arch, slow_served: tuple[dict, ServerProcess]) -> None:
    matrix, server = slow_served
    model, result = matrix[arch.name]
    variants = {f"pt2.{v}" for v in arch.variants}
    assert all(r.ok for r in result.rows) and {r.format for r in result.rows} == set(arch.formats) | variants
    if arch.name == "deeplabv3_mobilenet":  # an OrderedDict of two heads: both served, named by their keys
        assert [o["name"] for o in _config(result)["outputs"]] == ["out", "aux"]
    _server_parity(server, arch, model, result)
    for fmt in set(arch.formats) - {"torchscript"}:  # the other formats at a batch they were not verified at
        x = torch.rand(2, *arch.image)
        got = formats.LOADERS[fmt](result.directory / formats.artifact_name(fmt), "cpu")(x)
        for g, (name, e) in zip(got, _eager(model, x), strict=True):
            tolerance.assert_close(g, e, tolerance.tolerance(fmt), f"{arch.name} {fmt} {name}")


@pytest.mark.slow
def test_detection_serves_padded_boxes_compared_as_sets(tmp_path: Path) -> None:
    """Needs the server to register torchvision's ops (torchvision::nms) by itself: issue 13, item 5."""
    arch = tv_models.BY_NAME["fasterrcnn_mobilenet"]
    ((model, result),) = _export_all([arch], tmp_path / "repo").values()
    assert [(o["name"], o["datatype"], o["shape"]) for o in _config(result)["outputs"]] == [
        ("boxes", "FP32", [-1, 10, 4]),
        ("scores", "FP32", [-1, 10]),
        ("labels", "INT64", [-1, 10]),
        ("count", "INT64", [-1]),
    ]
    server = ServerProcess(tmp_path / "repo", "--device", "cpu", log_path=tmp_path / "server.log")
    with server.start(), Client(server.url) as client:
        for batch in BATCHES:
            x = torch.randn(batch, *arch.image, generator=torch.Generator().manual_seed(batch))
            got = client.infer(arch.name, {"images": x}, binary_inputs=True, binary_outputs=True)
            expected = tuple(t for _, t in _eager(model, x))
            actual = tuple(got[n] for n in ("boxes", "scores", "labels", "count"))
            c = tolerance.compare_detections(actual, expected, tolerance.tolerance("server"))
            assert c.ok and c.matched == int(expected[3].sum()), f"batch {batch}: {c}"
    # The same file adopted by `torchship import` in a fresh process, where nothing imported torchvision first.
    argv = ["import", str(result.directory / "model.pt"), "--name", "imported", "--repository", str(tmp_path / "r2")]
    done = subprocess.run(
        [sys.executable, "-m", "torchship.cli", *argv, "--input", "images=1x3x128x128", "--max-batch-size", "3"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "ok  C++ runtime (torchship._C), the same file" in done.stdout


@pytest.mark.slow
def test_a_detector_that_finds_nothing_is_caught(tmp_path: Path) -> None:
    arch = tv_models.BY_NAME["fasterrcnn_mobilenet"]
    model = tv_models.build(arch)
    model.detector.roi_heads.score_thresh = 1.1  # type: ignore[union-attr]  # no score can pass
    with pytest.raises(ExportError, match=r"output 'boxes' is all zero for every verification input"):
        export(model, torch.rand(1, *arch.image), name="blind", repository=tmp_path, max_batch_size=2,
               torchscript="script")  # fmt: skip
