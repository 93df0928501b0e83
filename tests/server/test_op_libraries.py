"""Custom operators and the load-time contract check, in the server and the bindings.

Run: .venv/bin/python -m pytest tests/server/test_op_libraries.py

Artifacts call custom ops by name (torchvision::nms in every detection model; a user's own). The
server and ``Runtime`` load torchvision's op library by themselves, others through --extra-library,
``Runtime(extra_libraries=...)`` or config.json "libraries"; an unknown op is a load error naming the
op and the flag, and the other models keep serving. The test op library (cpp/tests/test_ops.cpp) is
built with the project.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
import torch
import torchvision
from server_helpers import TEST_OPS, StartServer, save_scripted

from torchship import runtime
from torchship.client import Client


class NmsCount(torch.nn.Module):
    """Per row: how many boxes torchvision's NMS keeps at IoU 0.5 (a fixed-size answer from a data-dependent op)."""

    def forward(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        counts = [torchvision.ops.nms(boxes[i], scores[i], 0.5).numel() for i in range(boxes.shape[0])]
        return torch.tensor(counts, dtype=torch.int64).unsqueeze(1)


class ScaleAdd(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.torchship_test.scale_add(x, 3.0)


@pytest.fixture(scope="module")
def op_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert TEST_OPS.is_file(), f"{TEST_OPS} is built by tools/bootstrap.sh (cpp/tests/CMakeLists.txt)"
    torch.ops.load_library(str(TEST_OPS))  # to script ScaleAdd here; the server has no Python to do this
    repo = tmp_path_factory.mktemp("ops")
    save_scripted(
        repo, "nms", NmsCount(), [("boxes", "FP32", [8, 4]), ("scores", "FP32", [8])], [("kept", "INT64", [1])]
    )
    save_scripted(repo, "scale_add", ScaleAdd(), [("x", "FP32", [5])], [("y", "FP32", [5])])
    return repo


def _boxes(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(batch, 8, 2, generator=g) * 6  # crowded: NMS has work to do
    boxes = torch.cat([xy, xy + 5 + torch.rand(batch, 8, 2, generator=g) * 10], dim=2)
    return boxes, torch.rand(batch, 8, generator=g)


def test_torchvision_ops_are_loaded_by_the_server_itself(start_server: StartServer, op_repository: Path) -> None:
    server = start_server(op_repository, "--model", "nms")
    boxes, scores = _boxes(3)
    with Client(server.url) as client:
        (kept,) = client.infer("nms", {"boxes": boxes, "scores": scores}).values()
    assert torch.equal(kept, NmsCount()(boxes, scores))
    assert kept.min() >= 1 and kept.max() < 8, kept  # NMS really suppressed some boxes and kept some
    assert server.stop() == 0
    assert "operator library: " in server.log() and "torchvision" in server.log()  # loaded because nms needs it


def test_an_unknown_operator_names_itself_and_the_flag(start_server: StartServer, op_repository: Path) -> None:
    server = start_server(op_repository, wait_ready=False)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for _ in range(100):  # the good model serves while the other is reported
            if http.get("/v2/models/nms/ready").status_code == 200:
                break
            time.sleep(0.1)
        assert http.get("/v2/models/nms/ready").status_code == 200
        answer = http.get("/v2/models/scale_add")
        assert answer.status_code == 503
        reason = answer.json()["error"]
        assert "'torchship_test::scale_add'" in reason and "--extra-library" in reason, reason
        assert http.get("/v2/health/ready").status_code == 503  # a requested model failed (Triton's rule)


def test_extra_library_flag(start_server: StartServer, op_repository: Path) -> None:
    server = start_server(op_repository, "--extra-library", str(TEST_OPS), "--strict")
    x = torch.randn(2, 5)
    with Client(server.url) as client:
        (y,) = client.infer("scale_add", x).values()
    assert torch.equal(y, x * 3.0 + 1)


def test_config_json_libraries(start_server: StartServer, op_repository: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(op_repository / "scale_add", repo / "scale_add")
    shutil.copy(TEST_OPS, repo / "scale_add" / "libops.so")
    config = json.loads((repo / "scale_add" / "config.json").read_text())
    (repo / "scale_add" / "config.json").write_text(json.dumps(config | {"libraries": ["libops.so"]}))
    server = start_server(repo, "--strict")
    x = torch.randn(1, 5)
    with Client(server.url) as client:
        (y,) = client.infer("scale_add", x).values()
    assert torch.equal(y, x * 3.0 + 1)

    outside = tmp_path / "elsewhere.so"  # a library that leaves the repository is refused like an artifact
    shutil.copy(TEST_OPS, outside)
    (repo / "scale_add" / "libops.so").unlink()
    (repo / "scale_add" / "libops.so").symlink_to(outside)
    refused = start_server(repo, wait_ready=False)
    with httpx.Client(base_url=refused.url, timeout=30) as http:
        for _ in range(100):
            answer = http.get("/v2/models/scale_add")
            if "leads outside the model repository" in answer.text:
                break
            time.sleep(0.1)
    assert "leads outside the model repository" in answer.text, answer.text


def test_runtime_loads_op_libraries(op_repository: Path) -> None:
    boxes, scores = _boxes(2)
    with runtime.Runtime(op_repository, models=["nms"]) as rt:
        assert torch.equal(rt.model("nms").infer({"boxes": boxes, "scores": scores}), NmsCount()(boxes, scores))
    with runtime.Runtime(op_repository, models=["scale_add"], extra_libraries=[TEST_OPS]) as rt:
        x = torch.randn(3, 5)
        assert torch.equal(rt.model("scale_add").infer(x), x * 3.0 + 1)
    with pytest.raises(runtime.LoadError, match=r"does not exist"):
        runtime.Runtime(op_repository, extra_libraries=["/nonexistent/libops.so"])


def test_forward_signature_is_checked_against_config_at_load(op_repository: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(op_repository / "nms", repo / "nms")
    config = json.loads((repo / "nms" / "config.json").read_text())
    swapped = config | {"inputs": config["inputs"][::-1]}
    (repo / "nms" / "config.json").write_text(json.dumps(swapped))
    with pytest.raises(
        runtime.LoadError, match=r"input 'scores' is argument 2 of forward \(boxes, scores\) but input 1"
    ):
        runtime.Runtime(repo)
    (repo / "nms" / "config.json").write_text(json.dumps(config | {"inputs": config["inputs"][:1]}))
    with pytest.raises(runtime.LoadError, match=r"forward takes 2 argument\(s\) \(boxes, scores\), 2 required; config"):
        runtime.Runtime(repo)
