"""Run: .venv/bin/pytest tests/unit/test_export_failures.py

Export must fail loudly and write nothing: an artifact that disagrees with eager
PyTorch, an op ONNX cannot express, a trace that froze a Python value. Each
error names the model, the format and the cause. Also: sources (checkpoint vs
registry name), the command line, the zoo recipe and the CUDA toolkit lookup.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from torchship import models, tolerance
from torchship.cli import main
from torchship.export import (
    RANDOM_INIT,
    ExportError,
    export_checkpoint,
    export_registry_model,
    formats,
    random_init_checkpoint,
    toolchain,
)
from torchship.export.source import weights_digest
from torchship.models import registry
from torchship.models.registry import ModelEntry, TensorSpec
from torchship.training.checkpoint import build_model

REPO_ROOT = Path(__file__).resolve().parents[2]
ZOO_CHECKED = ("thermometer_linear", "row_sum")


def _nothing_written(repo: Path) -> None:
    assert not repo.exists() or not any(repo.iterdir()), f"export left {sorted(repo.rglob('*'))}"


class BesselModel(nn.Module):
    """Uses torch.special.i0 (prims.bessel_i0), which has no ONNX translation."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.i0(x * self.scale)


class SignFlip(nn.Module):
    """Data-dependent control flow: a trace freezes whichever branch the example took."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x + self.bias
        return -x + self.bias


@pytest.fixture
def test_models(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Two test-only entries, registered for one test only."""
    io = {"inputs": (TensorSpec("x", (-1, 4)),), "outputs": (TensorSpec("y", (-1, 4)),), "max_batch_size": 8}
    monkeypatch.setitem(registry._REGISTRY, "bessel_test", ModelEntry("bessel_test", BesselModel, description="", **io))
    monkeypatch.setitem(
        registry._REGISTRY, "sign_flip_test", ModelEntry("sign_flip_test", SignFlip, description="", **io)
    )
    yield


def test_wrong_values_fail_with_a_table_naming_model_format_and_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_onnx = formats.LOADERS["onnx"]

    def off_by_one(path: Path, device: str) -> formats.Runner:
        run = load_onnx(path, device)
        return lambda *x: tuple(t + 1.0 for t in run(*x))

    monkeypatch.setitem(formats.LOADERS, "onnx", off_by_one)
    repo = tmp_path / "repo"
    with pytest.raises(ExportError) as e:
        export_registry_model("thermometer_mlp", repo, ["torchscript", "onnx"])
    msg = str(e.value)
    assert "model 'thermometer_mlp': verification against eager PyTorch (CPU, fp32) failed" in msg
    assert "onnx on cpu: output 't_c' at batch 1" in msg and "max abs difference 1 > tolerance" in msg
    assert "torchscript  t_c" in msg and "ok" in msg  # the full table, passing rows included
    assert msg.count("FAIL") == 3  # batch 1, 3 and 256
    _nothing_written(repo)


def test_an_artifact_that_crashes_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: Path, device: str) -> formats.Runner:
        def run(*x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            raise RuntimeError("kernel exploded")

        return run

    monkeypatch.setitem(formats.LOADERS, "torchscript", broken)
    repo = tmp_path / "repo"
    with pytest.raises(ExportError, match=r"model 'net': torchscript artifact on cpu failed to run at batch 1, "):
        export_registry_model("net", repo, ["torchscript"])
    _nothing_written(repo)


def test_an_op_onnx_cannot_export_names_model_format_and_op(tmp_path: Path, test_models: None) -> None:
    repo = tmp_path / "repo"
    with pytest.raises(ExportError) as e:
        export_registry_model("bessel_test", repo, ["torchscript", "onnx"])  # TorchScript passes first
    msg = str(e.value)
    assert msg.startswith("model 'bessel_test': onnx export for cpu failed: DispatchError: No ONNX function found")
    assert "bessel_i0" in msg
    assert isinstance(e.value.__cause__, Exception)  # the exporter's own error stays chained for --verbose
    _nothing_written(repo)


def test_a_tracer_warning_from_model_code_fails_and_scripting_fixes_it(tmp_path: Path, test_models: None) -> None:
    repo = tmp_path / "repo"
    with pytest.raises(ExportError) as e:
        export_registry_model("sign_flip_test", repo, ["torchscript"])
    msg = str(e.value)
    assert "model 'sign_flip_test': torchscript export for cpu failed: TracerWarningError" in msg
    assert f"{Path(__file__).name}:" in msg and "Converting a tensor to a Python boolean" in msg
    _nothing_written(repo)
    # Chapter 15's remedy: script it. Both branches survive, and verification (random signs) agrees.
    result = export_registry_model("sign_flip_test", repo, ["torchscript"], torchscript_method="script")
    assert all(r.ok for r in result.rows)
    manifest = json.loads((result.directory / "manifest.json").read_text())
    assert manifest["export"]["torchscript"] == {"method": "script", "tracer_warnings_inside_torch": []}


def test_requests_that_cannot_work_are_refused_before_any_work(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    with pytest.raises(ExportError, match=r"unknown format\(s\) \['tflite'\]"):
        export_registry_model("thermometer_linear", repo, ["tflite"])
    with pytest.raises(ExportError, match=r"unknown device\(s\) \['tpu'\]"):
        export_registry_model("thermometer_linear", repo, ["torchscript"], devices=["tpu"])
    with pytest.raises(ExportError, match="does not fit its spec"):
        export_registry_model("cyclegan", repo, ["torchscript"], example_shapes={"image": (1, 4, 64, 64)})
    tiny = {"model_args": {"ngf": 2, "n_blocks": 0}, "example_shapes": {"image": (1, 3, 16, 16)}}
    with pytest.raises(ExportError, match=r"verify shape 1x3x2x2 for 'image': dimension 2 is 2, below the minimum 5"):
        export_registry_model("cyclegan", repo, ["torchscript"], verify_shapes={"image": [(1, 3, 2, 2)]}, **tiny)
    # Without the registry's size rule the same shape reaches eager PyTorch, whose failure is reported as such.
    unruled = random_init_checkpoint("cyclegan", tiny["model_args"], 0)
    for spec in unruled["inputs"]:
        spec.pop("min_shape", None)
    with pytest.raises(ExportError, match=r"model 'cyclegan': eager PyTorch failed at batch 3, input 3x2x2: Runtime"):
        shapes = {"verify_shapes": {"image": [(1, 3, 2, 2)]}, "example_shapes": tiny["example_shapes"]}
        export_checkpoint(unruled, repo, ["torchscript"], **shapes)
    with pytest.raises(ExportError, match="not a valid repository name"):
        export_registry_model("thermometer_linear", repo, ["torchscript"], name="../escape")
    if not torch.cuda.is_available():
        with pytest.raises(ExportError, match="CUDA is not available"):
            export_registry_model("thermometer_linear", repo, ["pt2"], devices=["cuda"])
    _nothing_written(repo)
    export_registry_model("thermometer_linear", repo, ["torchscript"], version=7)
    with pytest.raises(ExportError, match="already exists; pick another --version"):
        export_registry_model("thermometer_linear", repo, ["torchscript"], version=7)
    assert sorted(p.name for p in (repo / "thermometer_linear").iterdir()) == ["7", "config.json"]


def test_random_init_is_seeded_labelled_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = random_init_checkpoint("net", seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = random_init_checkpoint("net", seed=3)
    c = random_init_checkpoint("net", seed=4)
    assert weights_digest(a["state_dict"]) == weights_digest(b["state_dict"]) != weights_digest(c["state_dict"])
    assert a["weights"] == RANDOM_INIT and a["training"] == {"weights": RANDOM_INIT, "init_seed": 3}
    assert a["inputs"] == [s.to_dict() for s in models.get("net").inputs]


def test_cli_takes_a_checkpoint_or_a_registry_name(
    tmp_path: Path, thermometer_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    assert main(["export", str(thermometer_checkpoint), "--repository", str(repo), "--formats", "torchscript"]) == 0
    out = capsys.readouterr().out
    assert f"exported thermometer_linear version 1 (checkpoint {thermometer_checkpoint.name}" in out
    args = ["--repository", str(repo), "--formats", "torchscript,onnx", "--max-batch-size", "2", "--version", "3"]
    model_args = ["--model-args", '{"ngf": 4, "n_blocks": 1}', "--example-shape", "image=1x3x32x32"]
    assert main(["export", "cyclegan", *args, *model_args, "--verify-shape", "image=1x3x13x21"]) == 0
    out = capsys.readouterr().out
    assert "exported cyclegan version 3 (random-init (no checkpoint))" in out and "3x13x21" in out
    config = json.loads((repo / "cyclegan" / "config.json").read_text())
    assert config["weights"] == RANDOM_INIT and config["inputs"][0]["example_shape"] == [1, 3, 32, 32]
    assert main(["export", "no_such_model", "--repository", str(repo)]) == 1
    assert "neither a checkpoint file nor a registered model" in capsys.readouterr().err
    bad = ["export", str(thermometer_checkpoint), "--repository", str(repo), "--model-args", '{"hidden": 3}']
    assert main(bad) == 1
    assert "carries its model_args" in capsys.readouterr().err


def _zoo_module() -> object:
    spec = importlib.util.spec_from_file_location("export_zoo", REPO_ROOT / "export" / "export_zoo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_zoo_recipe_uses_checkpoints_where_found_and_labels_the_rest(
    tmp_path: Path, thermometer_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zoo = _zoo_module()
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    (ckpts / "lin.ckpt").write_bytes(thermometer_checkpoint.read_bytes())
    (ckpts / "junk.ckpt").write_bytes(b"not a checkpoint")  # skipped with a warning, not fatal
    repo = tmp_path / "repo"
    argv = ["--repository", str(repo), "--checkpoints", str(ckpts), "--formats", "torchscript"]
    assert zoo.main([*argv, "--models", "thermometer_linear,row_sum,luna_classifier", "--max-batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "[1/3] thermometer_linear: checkpoint" in out and "[2/3] row_sum: random init (no checkpoint)" in out
    assert "3 of 3 models exported" in out
    weights = {
        n: json.loads((repo / n / "config.json").read_text())["weights"] for n in ("thermometer_linear", "row_sum")
    }
    assert weights["thermometer_linear"].startswith("checkpoint lin.ckpt") and weights["row_sum"] == RANDOM_INIT
    with pytest.raises(SystemExit):  # argparse's error: unknown model names are refused before any work
        zoo.main([*argv, "--models", "nope"])
    assert "unknown model(s) nope" in capsys.readouterr().err


def test_cuda_toolkit_is_found_behind_a_wrapper_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "cuda-99.9"
    (real / "bin").mkdir(parents=True)
    (real / "include").mkdir()
    (real / "bin" / "nvcc").write_text("")
    (real / "include" / "cuda.h").write_text("")
    wrapper_dir = tmp_path / "local" / "bin"
    wrapper_dir.mkdir(parents=True)
    wrapper = wrapper_dir / "nvcc"
    wrapper.write_text(f'#!/bin/sh\nexec {real}/bin/nvcc "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(wrapper_dir))
    assert toolchain.find_cuda_toolkit() == (real, f"the nvcc wrapper {wrapper}")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "missing"))  # a stale variable is skipped, not trusted
    assert toolchain.find_cuda_toolkit() == (real, f"the nvcc wrapper {wrapper}")


def test_aoti_toolchain_set_up_is_quiet_and_points_at_a_real_toolkit() -> None:
    """In a fresh process: no "No CUDA runtime is found" line, and cpp_extension's CUDA_HOME really is a toolkit."""
    # As in export: prepare_cpp_extension imports cpp_extension itself, so its filter sees the import-time log.
    code = (
        "import pathlib, sys, torchship.export.toolchain as t; t.prepare_cpp_extension('cpu');"
        "h = sys.modules['torch.utils.cpp_extension'].CUDA_HOME;"
        "print('CUDA_HOME', h, h is None or (pathlib.Path(h) / 'include' / 'cuda.h').is_file())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "No CUDA runtime is found" not in done.stderr + done.stdout
    assert done.stdout.strip().endswith("True"), done.stdout


@pytest.mark.cuda
def test_cuda_pt2_is_compiled_and_verified_on_the_gpu(tmp_path: Path) -> None:
    # A conv-only model, chosen because the device image's torch 2.11 segfaulted loading AOTInductor CUDA
    # packages with a matmul; on 2026-11-23 it segfaulted on this one too (benchmarks/gpu.sh deselects it
    # there). It runs wherever torch matches the pin.
    args = {"ngf": 4, "n_blocks": 1}
    result = export_registry_model(
        "cyclegan",
        tmp_path / "repo",
        ["torchscript", "pt2"],
        model_args=args,
        devices=["cpu", "cuda"],
        max_batch_size=4,
        example_shapes={"image": (1, 3, 32, 32)},
    )
    files = sorted(p.name for p in result.directory.iterdir())
    assert files == ["manifest.json", "model.cuda.pt2", "model.pt", "model.pt2", "postprocess.pt", "preprocess.pt"]
    pairs = {(r.format, r.device) for r in result.rows}
    assert pairs == {("torchscript", "cpu"), ("torchscript", "cuda"), ("pt2", "cpu"), ("pt2", "cuda")}
    assert all(r.atol == tolerance.CUDA_FP32_TOL for r in result.rows if r.device == "cuda")
    x = torch.rand(3, 3, 45, 37)  # another batch and odd sizes: dynamic H and W on the GPU too
    with torch.no_grad():
        (expected,) = formats.as_tuple(build_model(random_init_checkpoint("cyclegan", args))(x))
    assert expected.shape == (3, 3, 48, 40)
    for fmt in ("torchscript", "pt2"):
        (y,) = formats.LOADERS[fmt](result.directory / formats.artifact_name(fmt, "cuda"), "cuda")(x)
        tolerance.assert_close(y, expected, tolerance.tolerance(fmt, "cuda"), f"{fmt} on cuda")
