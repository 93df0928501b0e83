"""The one tolerance policy for comparing runtimes (docs/tolerance.md).

Reference platform: eager PyTorch on CPU in fp32. Every comparison in export
verification and in the parity tests goes through ``compare``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# (runtime, device) -> max abs difference allowed against eager fp32 on CPU.
_ABS_TOL = {
    ("torchscript", "cpu"): 1e-5,
    ("pt2", "cpu"): 1e-5,
    ("native-torchscript", "cpu"): 1e-5,
    ("native-pt2", "cpu"): 1e-5,
    ("server", "cpu"): 1e-5,
    ("onnx", "cpu"): 1e-4,
}
SAME_ARTIFACT_TOL = 1e-6  # one artifact in Python TorchScript vs the C++ runtime, both on CPU
CUDA_FP32_TOL = 1e-4  # CPU vs CUDA fp32 with TF32 off


def tolerance(runtime: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    if dtype in (torch.float16, torch.bfloat16):
        raise ValueError("half-precision tolerances are stated per model; pass atol explicitly")
    if device.startswith("cuda"):
        return CUDA_FP32_TOL
    try:
        return _ABS_TOL[(runtime, device)]
    except KeyError:
        raise KeyError(f"no tolerance stated for runtime {runtime!r} on {device!r}") from None


@dataclass(frozen=True)
class Comparison:
    max_abs: float
    mean_abs: float
    atol: float

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.atol

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAIL"
        return f"max abs {self.max_abs:.3g}, mean abs {self.mean_abs:.3g} (tol {self.atol:g}) {verdict}"


def compare(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> Comparison:
    """Max and mean absolute difference; shapes and dtypes must match exactly."""
    actual = torch.as_tensor(actual)
    expected = torch.as_tensor(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    if actual.dtype != expected.dtype:
        raise AssertionError(f"dtype {actual.dtype} != expected {expected.dtype}")
    if actual.numel() == 0:
        return Comparison(0.0, 0.0, atol)
    diff = (actual.detach().cpu().double() - expected.detach().cpu().double()).abs()
    if torch.isnan(diff).any():
        both_nan = torch.isnan(actual.cpu()) & torch.isnan(expected.cpu())
        diff = torch.where(both_nan, torch.zeros_like(diff), diff)
        diff = torch.nan_to_num(diff, nan=float("inf"))
    return Comparison(float(diff.max()), float(diff.mean()), atol)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, what: str = "") -> Comparison:
    c = compare(actual, expected, atol)
    if not c.ok:
        raise AssertionError(f"{what}: {c}")
    return c
