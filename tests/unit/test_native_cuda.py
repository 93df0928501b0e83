"""Run: .venv/bin/pytest tests/unit/test_native_cuda.py  (skipped without a GPU)

The native runtime on CUDA: outputs equal the CPU runtime's within the
CPU-vs-CUDA fp32 tolerance (TF32 off), for CPU and device inputs, batched.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from torchship import runtime, tolerance


def test_device_parsing_without_a_gpu_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(ValueError, match="CUDA is not available"):
        runtime.Runtime(".", device="cuda")
    with pytest.raises(ValueError, match="bad device 'gpu'"):
        runtime.Runtime(".", device="gpu")


@pytest.mark.cuda
def test_cuda_matches_cpu(thermometer_repository: Path) -> None:
    x = torch.randn(37, 1) * 30 + 50
    with runtime.Runtime(thermometer_repository, device="cpu", format="torchscript") as rt:
        expected = rt.model("thermometer_linear").infer(x)
    with runtime.Runtime(thermometer_repository, device="cuda", format="torchscript") as rt:
        model = rt.model("thermometer_linear")
        assert model.device == "cuda:0"
        from_host = model.infer(x)
        from_device = model.infer(x.cuda())
    assert from_host.device.type == "cpu"
    tolerance.assert_close(from_host, expected, tolerance.CUDA_FP32_TOL, "cuda (host input) vs cpu")
    tolerance.assert_close(from_device, expected, tolerance.CUDA_FP32_TOL, "cuda (device input) vs cpu")


@pytest.mark.cuda
def test_cuda_concurrent_callers_get_their_own_rows(thermometer_repository: Path) -> None:
    with runtime.Runtime(thermometer_repository, device="cuda", instance_count=2) as rt:
        model = rt.model("thermometer_linear")
        ref_in = torch.arange(64, dtype=torch.float32).unsqueeze(1)
        ref = model.infer(ref_in)
        wrong: list[str] = []

        def worker(k: int) -> None:
            for i in range(100):
                row = (k * 7 + i) % 64
                out = model.infer(ref_in[row : row + 1])
                # Not bitwise: the JIT may fuse (FMA) differently for different batch shapes.
                c = tolerance.compare(out, ref[row : row + 1], tolerance.SAME_ARTIFACT_TOL)
                if not c.ok:
                    wrong.append(f"row {row}: {c}")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(worker, range(8)))  # 8 callers at once; re-raises a worker's exception
        assert not wrong
        assert model.stats()["batches"] < 8 * 100  # some requests shared a batch


def test_runtime_turns_tf32_off_for_parity(thermometer_repository: Path) -> None:
    torch.backends.cudnn.allow_tf32 = True
    runtime.configure()
    assert not torch.backends.cudnn.allow_tf32
    assert not torch.backends.cuda.matmul.allow_tf32
    runtime.configure(allow_tf32=True)
    assert torch.backends.cudnn.allow_tf32
    runtime.configure()


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_half_channels_last_matches_eager_fp32(
    net_repository: Path, net_eager: torch.nn.Module, precision: str
) -> None:
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net_eager(x)
    with runtime.Runtime(net_repository, device="cuda", precision=precision, channels_last=True) as rt:
        got = rt.model("net").infer(x)
    assert got.device.type == "cpu" and got.dtype == torch.float32 and got.is_contiguous()
    c = tolerance.assert_close(
        got, expected, tolerance.HALF_PRECISION_TOL[("net", precision)], f"cuda {precision} channels_last vs eager"
    )
    print(f"cuda {precision}: {c}")


@pytest.mark.cuda
def test_cuda_batches_of_device_tensors(net_repository: Path, net_eager: torch.nn.Module) -> None:
    """Requests holding CUDA tensors are batched too (concatenated on the device, not in pinned memory)."""
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = net_eager(x)
    with runtime.Runtime(net_repository, device="cuda") as rt:
        model = rt.model("net")
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda i: model.infer(x[i : i + 1].cuda()), range(32)))
        assert model.stats()["batches"] < 32  # some requests shared a batch
    tolerance.assert_close(torch.cat(got), expected, tolerance.CUDA_FP32_TOL, "batched device tensors")
