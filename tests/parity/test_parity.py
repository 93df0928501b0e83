"""Run: .venv/bin/pytest tests/parity -s

The parity matrix: a representative set of zoo models, exported once, through every runtime —
TorchScript in Python, ONNX Runtime, the C++ runtime via torchship._C (TorchScript and .pt2), and
torchship-server (JSON and binary), and where a GPU is visible TorchScript in Python and the C++
runtime on CUDA (fp32, TF32 off) — at batch sizes 1, 3 and max_batch_size, each against eager
PyTorch on CPU through the one tolerance policy (torchship.tolerance, docs/tolerance.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from torchship import models, parity
from torchship.export.pipeline import export_checkpoint, export_registry_model
from torchship.server_process import ServerProcess

# The trained chapter 5 checkpoint (the thermometer_checkpoint fixture), exported to every format.
THERMOMETER_FORMATS = "torchscript,onnx,pt2"
# Registry models, random-init: name -> (formats, export keyword arguments). Small max batches and example
# sizes keep the suite fast; .pt2 (an AOTInductor compile, ~10 s each) only where it adds coverage: an MLP, a
# CNN, two outputs. example_shapes is keyed by the registry's input name.
ZOO = {
    "thermometer_mlp": ("torchscript,onnx,pt2", {}),
    "net": ("torchscript,onnx,pt2", {"max_batch_size": 16}),
    "net_res_deep": ("torchscript,onnx", {"max_batch_size": 8}),
    "resnet18": ("torchscript,onnx", {"max_batch_size": 4}),
    "cyclegan": (
        "torchscript,onnx",
        {"model_args": {"ngf": 8, "n_blocks": 2}, "max_batch_size": 2, "example_shapes": {"image": (1, 3, 64, 64)}},
    ),
    "luna_classifier": ("torchscript,onnx,pt2", {"max_batch_size": 4}),
    "luna_segmentation": ("torchscript,onnx", {"max_batch_size": 2, "example_shapes": {"ct_slices": (1, 8, 64, 64)}}),
    "row_sum": ("torchscript", {"max_batch_size": 8}),
}


@pytest.fixture(scope="session")
def parity_repository(tmp_path_factory: pytest.TempPathFactory, thermometer_checkpoint: Path) -> Path:
    repo = tmp_path_factory.mktemp("parity_repo")
    export_checkpoint(thermometer_checkpoint, repo, THERMOMETER_FORMATS.split(","))
    for name, (formats, kwargs) in ZOO.items():
        export_registry_model(name, repo, formats.split(","), **kwargs)
    return repo


@pytest.fixture(scope="session")
def parity_server(parity_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("parity_server") / "server.log"
    with ServerProcess(parity_repository, "--device", "cpu", "--grpc-port", "0", log_path=log) as server:
        yield server


@pytest.fixture(scope="session")
def parity_rows(parity_repository: Path, parity_server: ServerProcess) -> list[parity.ParityRow]:
    rows = parity.run(
        parity_repository,
        server_url=parity_server.url,
        progress=False,
        grpc_address=f"127.0.0.1:{parity_server.grpc_port}",
    )
    print("\n" + parity.markdown_table(rows))
    return rows


_FORMATS = {"thermometer_linear": (THERMOMETER_FORMATS, {}), **ZOO}
MODELS = list(_FORMATS)


def _cases() -> list:
    """(model, runtime, batch size) for every runtime the suite exported an artifact for."""
    cases = []
    for model, (formats, kwargs) in _FORMATS.items():
        max_batch = kwargs.get("max_batch_size") or models.get(model).max_batch_size
        for runtime in parity.DEFAULT_RUNTIMES:
            if (parity.RUNTIMES[runtime].fmt or "torchscript") in formats.split(","):  # a server loads TorchScript
                marks = [pytest.mark.cuda] if runtime.endswith("-cuda") else []
                cases += [
                    pytest.param(model, runtime, b, marks=marks) for b in sorted({1, 3, max_batch}) if b <= max_batch
                ]
    return cases


@pytest.mark.parametrize(("model", "runtime", "batch"), _cases())
def test_runtime_matches_eager(parity_rows: list[parity.ParityRow], model: str, runtime: str, batch: int) -> None:
    rows = [r for r in parity_rows if r.model == model and r.runtime == runtime and r.batch_size == batch]
    assert rows, f"no comparison ran for {model}/{runtime}/batch {batch}"
    for r in rows:
        assert r.ok, f"{model} {runtime} batch {batch} output {r.output}: max abs {r.max_abs:.3g} > {r.bound:.3g}"


def test_every_model_was_compared_on_every_available_runtime(parity_rows: list[parity.ParityRow]) -> None:
    compared = {(r.model, r.runtime) for r in parity_rows}
    for model in MODELS:
        for runtime in ("torchscript", "native-torchscript", "server-json", "server-binary", "server-grpc"):
            assert (model, runtime) in compared, f"{model} never ran on {runtime}"


def test_a_wrong_artifact_fails_parity(tmp_path: Path, thermometer_checkpoint: Path) -> None:
    """The suite can fail: an artifact whose weights were changed after export is caught."""
    repo = tmp_path / "repo"
    export_checkpoint(thermometer_checkpoint, repo, ["torchscript"])
    m = parity.repository_models(repo)[0]
    with torch.no_grad():
        module = torch.jit.load(str(m.version_dir / "model.pt"))
        module.b.add_(0.5)
        module.save(str(m.version_dir / "model.pt"))
    # The reference comes from the untouched checkpoint (its sha256 still matches the manifest).
    rows = parity.check_model(repo, m, ["torchscript", "native-torchscript"])
    assert rows and not any(r.ok for r in rows)
    assert all(abs(r.max_abs - 0.5) < 1e-5 for r in rows)
