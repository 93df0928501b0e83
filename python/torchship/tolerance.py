"""The one tolerance policy for comparing runtimes (docs/tolerance.md).

Reference platform: eager PyTorch on CPU in fp32. Every comparison in export
verification and in the parity tests goes through ``compare``.

The bound is ``atol * max |expected|`` per output tensor: relative to the
output's own magnitude, whatever it is. Float32 rounding differences between
kernels grow with the size of the values summed; measured on the zoo they stay
near 1e-6 of the largest output (ONNX Runtime vs eager: ResNet-50 with random
weights, logits up to 110, differs by 5.8e-5; ResNet-101, logits up to 7.4e4,
by 0.044). Scaling down as well as up means two near-zero tensors are compared
at their own scale, not accepted because both are small.

A reference that cannot tell a right artifact from a wrong one (all zero,
the same for every random input, or smaller than ``REFERENCE_FLOOR``) fails
export: ``degenerate`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# (runtime, device) -> max abs difference allowed against eager fp32 on CPU, times max |expected|.
_ABS_TOL = {
    ("torchscript", "cpu"): 1e-5,
    # AOTInductor generates its own fused kernels and reduction orders: CycleGAN's InstanceNorm-heavy
    # generator reaches 8.6e-6 (outputs in [-1, 1]), too close to 1e-5 to be a stable bound.
    ("pt2", "cpu"): 5e-5,
    ("native-torchscript", "cpu"): 1e-5,
    ("native-pt2", "cpu"): 5e-5,
    ("server", "cpu"): 1e-5,
    ("onnx", "cpu"): 1e-4,
}
SAME_ARTIFACT_TOL = 1e-6  # one artifact in Python TorchScript vs the C++ runtime, both on CPU
# preprocess.pt (docs/images.md) vs torchvision's v2 tensor transforms: the same uint8 kernels, so only
# float rounding in the last steps; absolute, on the model input (values O(1)).
PREPROCESS_TOL = 1e-5
# ... vs the PIL training path, in uint8 levels before the float steps: PIL resamples in its own fixed
# point, torch's uint8 kernel in another; measured at most 1 on photos and odd sizes.
PREPROCESS_PIL_LEVELS = 1
CUDA_FP32_TOL = 1e-4  # CPU vs CUDA fp32 with TF32 off
# A model run in reduced precision (Runtime(precision=...), torchship-server --precision) vs eager fp32 on
# CPU, times max |expected|. Rounding in fp16/bf16 depends on the model's depth and value ranges, so
# each bound is stated per model, about ten times what was measured relative to the output's magnitude: the
# seeded chapter 8 Net on 16 images (tests/unit/test_native_runtime.py, max |logit| 0.185) differed by
# fp16 1.43e-4 (7.7e-4 of it) and bf16 1.16e-3 (6.3e-3) on CPU, and (same test file, on an H100 with
# channels_last) by fp16 1.0e-4 and bf16 1.2e-3.
HALF_PRECISION_TOL = {
    ("net", "fp16"): 1e-2,
    ("net", "bf16"): 5e-2,
}


def tolerance(runtime: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    if dtype in (torch.float16, torch.bfloat16):
        raise ValueError("half-precision tolerances are stated per model: use HALF_PRECISION_TOL")
    if device.startswith("cuda"):
        return CUDA_FP32_TOL
    try:
        return _ABS_TOL[(runtime, device)]
    except KeyError:
        raise KeyError(f"no tolerance stated for runtime {runtime!r} on {device!r}") from None


def magnitude_scale(expected: torch.Tensor) -> float:
    """``max |expected|`` over the finite values: what ``atol`` is multiplied by (1 for integers, which must
    match exactly, and for a tensor with no finite value)."""
    if not expected.is_floating_point():
        return 1.0
    finite = expected.detach()[torch.isfinite(expected.detach())]
    if finite.numel() == 0:
        return 1.0
    return float(finite.abs().max())


class WithinBound:
    """The policy's verdict for anything carrying ``max_abs``, ``atol`` and ``scale`` (comparisons,
    export verification rows, parity rows): one definition of "close enough"."""

    max_abs: float
    atol: float
    scale: float

    @property
    def bound(self) -> float:
        return self.atol * self.scale

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.bound


@dataclass(frozen=True)
class Comparison(WithinBound):
    max_abs: float
    mean_abs: float
    atol: float
    scale: float = 1.0  # max |expected|

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAIL"
        tol = f"tol {self.atol:g}" if self.scale == 1.0 else f"tol {self.atol:g} x {self.scale:.3g} = {self.bound:.3g}"
        return f"max abs {self.max_abs:.3g}, mean abs {self.mean_abs:.3g} ({tol}) {verdict}"


def compare(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> Comparison:
    """Max and mean absolute difference, judged against ``atol * max |expected|``;
    shapes and dtypes must match exactly."""
    actual = torch.as_tensor(actual)
    expected = torch.as_tensor(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    if actual.dtype != expected.dtype:
        raise AssertionError(f"dtype {actual.dtype} != expected {expected.dtype}")
    if actual.numel() == 0:
        return Comparison(0.0, 0.0, atol)
    scale = magnitude_scale(expected.cpu())
    diff = (actual.detach().cpu().double() - expected.detach().cpu().double()).abs()
    if torch.isnan(diff).any():
        both_nan = torch.isnan(actual.cpu()) & torch.isnan(expected.cpu())
        diff = torch.where(both_nan, torch.zeros_like(diff), diff)
        diff = torch.nan_to_num(diff, nan=float("inf"))
    return Comparison(float(diff.max()), float(diff.mean()), atol, scale)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, what: str = "") -> Comparison:
    c = compare(actual, expected, atol)
    if not c.ok:
        raise AssertionError(f"{what}: {c}")
    return c


# A reference is degenerate when it cannot tell a right artifact from a wrong one (docs/tolerance.md).
# Below REFERENCE_FLOOR a float output is mostly the rounding of its model's O(1) intermediates
# (a random-init EfficientNet-B0's logits measured ~1e-14), so no bound on it means anything.
REFERENCE_FLOOR = 1e-3
# Rows of a float output farther apart than this (relative to max |output|) differ for a reason;
# the same for every random input means the input does not reach the output (a zero-initialised head).
CONSTANT_SPREAD = 1e-6


def degenerate(outputs: list[torch.Tensor]) -> str | None:
    """Why eager's values of one output over the verification inputs prove nothing, or None.

    ``outputs`` are that output at every case (batch first). Integer and bool
    outputs are degenerate only when all zero (a detector that finds nothing);
    float outputs also when below ``REFERENCE_FLOOR`` or constant across rows.
    """
    values = [t.detach().cpu() for t in outputs if t.numel()]
    if not values:
        return "empty at every verification input"
    peak = max(float(t.double().abs().max()) if t.dtype != torch.bool else float(t.any()) for t in values)
    if peak == 0.0:
        return "all zero for every verification input"
    if not values[0].is_floating_point():
        return None
    if peak < REFERENCE_FLOOR:
        return f"below the floor {REFERENCE_FLOOR:g} (max |output| {peak:.3g})"
    rows = [r for t in values for r in t.double().reshape(t.shape[0], -1)]
    groups: dict[int, list[torch.Tensor]] = {}
    for r in rows:
        groups.setdefault(r.numel(), []).append(r)
    spread = max(float((torch.stack(g) - g[0]).abs().max()) for g in groups.values())
    if len(rows) > 1 and spread <= CONSTANT_SPREAD * peak:
        return f"the same for every random input (rows differ by at most {spread:.3g}, max |output| {peak:.3g})"
    return None


# A .pt2 variant compiled in reduced precision or channels_last (docs/variants.md) vs eager fp32 on CPU,
# times max |expected|, for any model (a user's model has no measured bound of its own). Measured
# (docs/tolerance.md): bf16 differed by 5.0e-3 (ConvNeXt-T), 6.0e-3 (chapter 8 Net) and 1.2e-2 (SqueezeNet)
# of max |output|; fp32 channels_last by <= 7.9e-7. fp16 (CUDA only) is not measured yet.
VARIANT_TOL = {
    ("pt2", "fp32"): 5e-5,  # channels_last only: the same arithmetic in another order
    ("pt2", "bf16"): 5e-2,
    ("pt2", "fp16"): 1e-2,
}


# int8 variants (docs/quantization.md) vs eager fp32 on CPU, on held-out inputs of the calibration source,
# times max |expected|, per registry model: about twice the worst measured over both flows (docs/tolerance.md).
# digits_net, its validation split: FX 2.3e-2 trained 4 epochs, 1.0e-1 trained 2 (the worst logit of 359; mean
# abs 3.5e-2 of 7.8). resnet18, random-init with BatchNorm
# statistics from 24 sample-photo crops, 24 other crops: FX 8.0e-2, PT2E 5.8e-2. Quantization error is a
# property of the model and its data, so an unlisted model is refused rather than guessed.
INT8_TOL = {
    "digits_net": 0.2,
    "resnet18": 0.15,
}
# Top-1 agreement with fp32 on those held-out inputs (measured: digits_net 100 % of 359; resnet18 83.3 % FX and
# 87.5 % PT2E of 24 crops, a random network's near-ties), and (labelled data) held-out accuracy no more than
# INT8_ACCURACY_DROP below fp32's (digits: 1 point, about 3 of the 359 validation images; measured 0).
INT8_AGREEMENT = {
    "digits_net": 0.98,
    "resnet18": 0.75,
}
INT8_ACCURACY_DROP = 0.01


def int8_tolerance(model: str) -> float:
    try:
        return INT8_TOL[model]
    except KeyError:
        raise KeyError(
            f"no int8 bound stated for model {model!r}: measure one and add it to tolerance.INT8_TOL "
            f"(stated for {', '.join(sorted(INT8_TOL))})"
        ) from None


def int8_agreement(model: str) -> float:
    try:
        return INT8_AGREEMENT[model]
    except KeyError:
        raise KeyError(f"no int8 top-1 agreement stated for model {model!r} in tolerance.INT8_AGREEMENT") from None


def variant_tolerance(fmt: str, device: str, precision: str) -> float:
    """The bound of a compiled variant (``fmt`` in ``precision``) against eager fp32 on CPU."""
    try:
        atol = VARIANT_TOL[(fmt, precision)]
    except KeyError:
        raise KeyError(f"no tolerance stated for a {precision} {fmt} variant") from None
    return max(atol, CUDA_FP32_TOL) if device.startswith("cuda") else atol


# Detections (torchship.export.detection's padded boxes/scores/labels/count) are compared as sets: NMS and
# sorting order equal scores arbitrarily, so positions may differ where values agree. Two detections match
# when their labels are equal, their boxes overlap by at least DETECTION_IOU (fp32 kernels move a box edge by
# ~1e-5 of the image, IoU 1 - 1e-4 at most) and their scores differ within the runtime's bound.
DETECTION_IOU = 0.999


@dataclass(frozen=True)
class DetectionComparison(WithinBound):
    max_abs: float  # worst score difference among matched detections; inf when any is unmatched
    mean_abs: float
    atol: float
    scale: float
    matched: int
    unmatched: int
    min_iou: float

    def __str__(self) -> str:
        return (
            f"{self.matched} matched, {self.unmatched} unmatched, min IoU {self.min_iou:.6f}, "
            f"max score difference {self.max_abs:.3g} (bound {self.bound:.3g}) {'ok' if self.ok else 'FAIL'}"
        )


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), x1 y1 x2 y2."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union, (a[:, None] == b[None, :]).all(dim=2).to(inter.dtype))


def compare_detections(
    actual: tuple[torch.Tensor, ...], expected: tuple[torch.Tensor, ...], atol: float
) -> DetectionComparison:
    """``(boxes, scores, labels, count)`` of a batch against eager's, matched per image as sets.

    Each expected detection takes the unmatched actual one with its label and the
    highest IoU; a pair matches at IoU >= DETECTION_IOU. The scores' bound is
    ``atol * max expected score``, as for any output."""
    boxes_a, scores_a, labels_a, count_a = (t.detach().cpu() for t in actual)
    boxes_e, scores_e, labels_e, count_e = (t.detach().cpu() for t in expected)
    matched = unmatched = 0
    diffs: list[float] = []
    min_iou = 1.0
    for i in range(count_e.shape[0]):
        ne, na = int(count_e[i]), int(count_a[i])
        free = torch.ones(na, dtype=torch.bool)
        ious = _iou(boxes_e[i, :ne].double(), boxes_a[i, :na].double()) if ne and na else torch.zeros(ne, na)
        found = 0
        for j in range(ne):
            candidate = torch.where(free & (labels_a[i, :na] == labels_e[i, j]), ious[j], -1.0)
            k = int(candidate.argmax()) if na else -1
            if k < 0 or float(candidate[k]) < DETECTION_IOU:
                continue
            free[k] = False
            found += 1
            min_iou = min(min_iou, float(candidate[k]))
            diffs.append(abs(float(scores_a[i, k]) - float(scores_e[i, j])))
        matched += found
        unmatched += (ne - found) + (na - found)
    scale = magnitude_scale(scores_e)
    worst = float("inf") if unmatched else max(diffs, default=0.0)
    mean = sum(diffs) / len(diffs) if diffs else 0.0
    return DetectionComparison(worst, mean, atol, scale, matched, unmatched, min_iou)
