"""Run: .venv/bin/pytest tests/unit/test_native_runtime.py

The vertical slice: a trained checkpoint, exported, loaded by the C++ core,
called through torchship._C, equals eager PyTorch.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from torchship import runtime, tolerance


@pytest.fixture(scope="module")
def rt(thermometer_repository: Path):
    with runtime.Runtime(thermometer_repository, device="cpu") as r:
        yield r


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_native_output_equals_eager(
    thermometer_pt2_repository: Path, thermometer_eager: torch.nn.Module, fmt: str
) -> None:
    with runtime.Runtime(thermometer_pt2_repository, format=fmt) as r:
        model = r.model("thermometer_linear")
        assert model.format == fmt
        for batch in (1, 3, model.max_batch_size):
            x = torch.randn(batch, 1) * 30 + 50
            got = model.infer(x)
            with torch.no_grad():
                expected = thermometer_eager(x)
            c = tolerance.assert_close(got, expected, tolerance.tolerance(f"native-{fmt}"), f"{fmt} batch {batch}")
            print(f"{fmt} batch {batch}: {c}")


def test_numpy_input_and_named_inputs(rt: runtime.Runtime) -> None:
    model = rt.model("thermometer_linear")
    x = np.array([[35.7], [81.9]], dtype=np.float32)
    a = model.infer(x)
    b = model.infer({"t_u": torch.from_numpy(x)})
    assert torch.equal(a, b)


def test_invalid_inputs_raise_value_error_naming_the_problem(rt: runtime.Runtime) -> None:
    model = rt.model("thermometer_linear")
    with pytest.raises(runtime.InvalidInputError, match=r"expected shape \[-1, 1\].*received \[2, 3\]"):
        model.infer(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="expected datatype FP32"):
        model.infer(torch.zeros(2, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="has no input 'x'"):
        model.infer({"x": torch.zeros(1, 1)})
    with pytest.raises(ValueError, match=r"batch size 257 is outside 1\.\.256"):
        model.infer(torch.zeros(257, 1))
    assert model.infer(torch.zeros(1, 1)).shape == (1, 1)  # still serving after bad input
    stats = model.stats()
    assert stats["failed_invalid"] >= 4


def test_unknown_model_is_a_lookup_error(rt: runtime.Runtime) -> None:
    with pytest.raises(LookupError, match="unknown model 'nope' \\(available: thermometer_linear\\)"):
        rt.model("nope")
    with pytest.raises(runtime.NotFoundError, match="no version '7'"):
        rt.model("thermometer_linear", 7)


def test_load_errors_name_the_file(tmp_path: Path, thermometer_repository: Path) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(thermometer_repository, repo)
    (repo / "thermometer_linear" / "1" / "model.pt").write_bytes(b"garbage")
    with pytest.raises(runtime.LoadError, match=r"cannot load model 'thermometer_linear' version 1 \(.*model\.pt\)"):
        runtime.Runtime(repo, format="torchscript")
    with pytest.raises(runtime.LoadError, match="not a directory"):
        runtime.Runtime(tmp_path / "missing")


def test_concurrent_callers_get_their_own_rows(rt: runtime.Runtime) -> None:
    model = rt.model("thermometer_linear")
    w, b = None, None
    ref = model.infer(torch.tensor([[0.0], [10.0]]))
    b = float(ref[0, 0])
    w = (float(ref[1, 0]) - b) / 1.0  # w * 0.1 * 10
    errors: list[str] = []

    def worker(k: int) -> None:
        for i in range(200):
            v = float(k * 1000 + i)
            out = model.infer(torch.tensor([[v]]))
            if abs(float(out[0, 0]) - (w * 0.1 * v + b)) > 1e-2:
                errors.append(f"{k}/{i}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))  # 8 callers at once; re-raises a worker's exception
    assert not errors
    assert model.stats()["requests_ok"] >= 1600


def test_config_is_the_exported_contract(rt: runtime.Runtime, thermometer_repository: Path) -> None:
    model = rt.model("thermometer_linear")
    on_disk = json.loads((thermometer_repository / "thermometer_linear" / "config.json").read_text())
    assert model.config == on_disk
    assert model.input_names == ["t_u"] and model.output_names == ["t_c"]


def test_numpy_contiguous_input_is_not_copied() -> None:
    x = np.arange(6, dtype=np.float32).reshape(6, 1)
    assert runtime.as_tensor(x, "t_u").data_ptr() == x.ctypes.data  # zero-copy
    strided = np.arange(12, dtype=np.float32).reshape(6, 2)[:, :1]
    t = runtime.as_tensor(strided, "t_u")
    assert t.is_contiguous() and torch.equal(t, torch.from_numpy(strided.copy()))


def test_a_build_for_another_torch_is_refused_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchship
    from torchship import _build_info

    monkeypatch.setattr(_build_info, "TORCH_VERSION", "1.0.0")
    with pytest.raises(ImportError, match=rf"built against torch 1\.0\.0 but torch {re.escape(torch.__version__)}"):
        torchship._check_native_build()


@pytest.mark.parametrize(("precision", "channels_last"), [("fp16", False), ("bf16", True)])
def test_reduced_precision_runs_in_half_and_answers_in_the_config_dtype(
    net_repository: Path, net_eager: torch.nn.Module, precision: str, channels_last: bool
) -> None:
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net_eager(x)
    with runtime.Runtime(net_repository, precision=precision, channels_last=channels_last) as rt:
        got = rt.model("net").infer(x)
    assert got.dtype == torch.float32 and got.is_contiguous()
    c = tolerance.assert_close(got, expected, tolerance.HALF_PRECISION_TOL[("net", precision)], f"net in {precision}")
    print(f"{precision}: {c}")  # tolerance.HALF_PRECISION_TOL states what this measured
    assert c.max_abs > 0, "bit-identical to fp32: the model did not run in reduced precision"


def test_channels_last_alone_keeps_fp32_results(net_repository: Path, net_eager: torch.nn.Module) -> None:
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = net_eager(x)
    with runtime.Runtime(net_repository, channels_last=True) as rt:
        got = rt.model("net").infer(x)
    assert got.is_contiguous()
    tolerance.assert_close(got, expected, tolerance.tolerance("native-torchscript"), "net channels_last")


def test_reduced_precision_needs_a_variant_or_torchscript(thermometer_pt2_repository: Path) -> None:
    # docs/variants.md: a .pt2 is never converted at load; the refusal names what the version holds.
    with pytest.raises(
        runtime.LoadError,
        match=r"no artifact for format pt2, device cpu, precision fp16.*pt2 cpu fp32 contiguous \(model\.pt2\)"
        r".*a \.pt2 is compiled for one precision",
    ):
        runtime.Runtime(thermometer_pt2_repository, format="pt2", precision="fp16")
    with pytest.raises(runtime.LoadError, match=r"precision int8.*int8 is made at export"):
        runtime.Runtime(thermometer_pt2_repository, precision="int8")  # never made at load
    with pytest.raises(ValueError, match=r"unknown precision 'fp8' \(expected fp32, fp16, bf16, int8\)"):
        runtime.Runtime(thermometer_pt2_repository, precision="fp8")
    with runtime.Runtime(thermometer_pt2_repository, precision="fp16") as rt:  # TorchScript fp32, converted
        (model,) = rt.models()
        assert model.format == "torchscript" and model.precision == "fp16"
        assert "converted at load to fp16" in model.variant


class _WithIntegerBuffers(torch.nn.Module):
    """t_u -> t_c like the thermometer, through an int64 index buffer and a bool mask buffer: what position
    ids and attention masks look like in larger models. Neither may be cast by ``precision``."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)
        self.register_buffer("index", torch.tensor([0, 0, 0]))
        self.register_buffer("keep", torch.tensor([True, False, True]))
        self.register_buffer("scale", torch.tensor([1.0, 2.0, 3.0]))  # a floating buffer: this one is cast

    def forward(self, t_u: torch.Tensor) -> torch.Tensor:
        x = t_u.index_select(1, self.index) * self.scale
        return self.linear(x.masked_fill(~self.keep, 0.0))


def _replace_artifact(tmp_path: Path, repository: Path, module: torch.jit.ScriptModule) -> Path:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(repository, repo)
    module.save(str(repo / "thermometer_linear" / "1" / "model.pt"))
    return repo


def test_reduced_precision_keeps_integer_and_bool_buffers(tmp_path: Path, thermometer_repository: Path) -> None:
    torch.manual_seed(0)
    model = _WithIntegerBuffers().eval()
    x = torch.randn(5, 1)
    repo = _replace_artifact(tmp_path, thermometer_repository, torch.jit.trace(model, (x,)))
    with torch.no_grad():
        expected = model(x)
    with runtime.Runtime(repo, format="torchscript", precision="fp16") as rt:
        got = rt.model("thermometer_linear").infer(x)
    assert got.dtype == torch.float32
    tolerance.assert_close(got, expected, 1e-2, "fp16 with int64 and bool buffers")  # one fp16 linear layer


def test_reduced_precision_refuses_a_frozen_module(tmp_path: Path, thermometer_repository: Path) -> None:
    frozen = torch.jit.freeze(torch.jit.script(_WithIntegerBuffers().eval()))  # weights become graph constants
    repo = _replace_artifact(tmp_path, thermometer_repository, frozen)
    with pytest.raises(runtime.LoadError, match="no floating parameters or buffers to cast"):
        runtime.Runtime(repo, format="torchscript", precision="bf16")
    with runtime.Runtime(repo, format="torchscript") as rt:  # as exported it still serves
        assert rt.model("thermometer_linear").infer(torch.ones(2, 1)).shape == (2, 1)
