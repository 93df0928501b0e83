"""int8 variants at export (docs/quantization.md): static quantization calibrated on data the user names.

- TorchScript (``model.int8.pt``): FX graph-mode quantization (``torch.ao.quantization.quantize_fx``, x86
  backend: fbgemm/oneDNN kernels), traced after ``convert_fx``.
- ``.pt2`` (``model.int8.pt2``): PT2E from torchao with ``X86InductorQuantizer`` on a *strict*
  ``torch.export`` (non-strict fails in the quantizer: "Input partition has more than one output node"),
  compiled by AOTInductor with ``freezing`` on (without it the weights are re-quantized per call, ~10x slower).

Both take and return the model's declared fp32 tensors: quantize/dequantize happen inside the artifact.
Verification compares each with eager fp32 on the held-out inputs (the calibration's distribution, which
the observers' ranges were fitted to) under the per-model bound of ``tolerance.INT8_TOL``; classifiers also
need top-1 agreement with fp32 (``tolerance.INT8_AGREEMENT``) and, with labels, held-out accuracy within
``tolerance.INT8_ACCURACY_DROP`` of fp32's.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchship import tolerance
from torchship.export.calibration import Calibration
from torchship.export.errors import ExportError
from torchship.export.variants import Variant
from torchship.export.verify import Case, VerificationRow, verify

log = logging.getLogger("torchship.export")
PRECISION = "int8"
BACKEND = "x86"
FORMATS = ("torchscript", "pt2")  # ONNX int8 is not made: ONNX Runtime is a verification runtime here
CALIBRATION_BATCH = 16


def targets(formats: Sequence[str], devices: Sequence[str]) -> list[Variant]:
    """The int8 variants an export with ``quantize="int8"`` adds: one per requested TorchScript/.pt2 format."""
    if "cpu" not in devices:
        raise ExportError("int8 variants are compiled and verified on the CPU (x86 quantizers); add --device cpu")
    found = [Variant(fmt, "cpu", PRECISION) for fmt in FORMATS if fmt in formats]
    if not found:
        raise ExportError(f"--quantize int8 makes TorchScript and .pt2 variants; --formats has neither ({formats})")
    return found


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch 2.14 deprecates torch.ao FX quantization with a warning per call, and both flows advise themselves
    (reduce_range, copy-constructing a zero point) with UserWarnings the user cannot act on. TracerWarnings
    (a category of their own) still surface; verification judges the artifact either way."""
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning, UserWarning):
            warnings.filterwarnings("ignore", category=category)
        yield


def quantize_fx(model: nn.Module, calibration: Calibration, batch: int) -> torch.jit.ScriptModule:
    """FX graph-mode static quantization (x86), calibrated, then traced to TorchScript."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = BACKEND
    batches = calibration.batches(batch)
    with _quiet(), torch.no_grad():
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping(BACKEND), (batches[0],))
        for x in batches:
            prepared(x)
        converted = convert_fx(prepared)
        with warnings.catch_warnings(record=True) as caught:
            # Tracing a quantized graph formats quantized tensors inside torch (tensor -> bool): recorded as in
            # formats._trace, not raised; verification at every held-out batch size judges the trace.
            warnings.simplefilter("always", torch.jit.TracerWarning)
            traced = torch.jit.trace(converted, (batches[0],))
    tracer = {str(w.message).split(".")[0] for w in caught if issubclass(w.category, torch.jit.TracerWarning)}
    for message in tracer:
        log.warning("int8 TorchScript: TracerWarning inside torch while tracing the quantized graph: %s", message)
    return traced


def quantize_pt2e(model: nn.Module, calibration: Calibration, dynamic: Any, path: Path, batch: int) -> None:
    """PT2E (torchao) with X86InductorQuantizer on a strict torch.export, packaged by AOTInductor, frozen."""
    import torch._inductor
    import torch._inductor.config
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from torchship.export import toolchain

    toolchain.prepare_cpp_extension("cpu")
    batches = calibration.batches(batch)  # the first is torch.export's example: within the batch range
    example = (batches[0],)
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    with _quiet(), torch.no_grad():
        captured = torch.export.export(copy.deepcopy(model).eval(), example, dynamic_shapes=dynamic, strict=True)
        prepared = prepare_pt2e(captured.module(), quantizer)
        for x in batches:
            prepared(x)
        converted = convert_pt2e(prepared)
        program = torch.export.export(converted, example, dynamic_shapes=dynamic, strict=True)
        with torch._inductor.config.patch(freezing=True):
            torch._inductor.aoti_compile_and_package(program, package_path=str(path))


def write(
    variant: Variant, model: nn.Module, calibration: Calibration, path: Path, dynamic: Any, max_batch_size: int
) -> dict[str, Any]:
    """Writes one int8 artifact; returns the settings the manifest records for it."""
    batch = min(CALIBRATION_BATCH, max_batch_size)
    common = {"precision": PRECISION, "backend": BACKEND, "calibration": calibration.manifest()}
    if variant.format == "torchscript":
        quantize_fx(model, calibration, batch).save(str(path))
        return {variant.settings_key: {"flow": "torch.ao.quantization.quantize_fx (FX graph mode, static)", **common}}
    quantize_pt2e(model, calibration, dynamic, path, batch)
    import torchao

    return {
        variant.settings_key: {
            "flow": f"torchao {torchao.__version__} PT2E, X86InductorQuantizer (static, per-channel weights)",
            "torch_export": "strict",
            "aoti_compile_and_package": True,
            "inductor_freezing": True,
            **common,
        }
    }


@dataclass
class Int8Check:
    """Held-out verification of the int8 variants: eager fp32's answers, and what each variant scored."""

    model: str  # the name the tolerance policy states bounds under (the registry model)
    calibration: Calibration
    cases: list[Case]
    classifier: bool
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def build(cls, model: nn.Module, name: str, calibration: Calibration, batch: int) -> Int8Check:
        cases = []
        with torch.no_grad():
            for x in calibration.held_out.split(batch):
                out = model(x)
                flat = (out,) if isinstance(out, torch.Tensor) else tuple(out)
                cases.append(Case(len(x), "x".join(map(str, x.shape[1:])), (x,), flat))
        first = cases[0].expected
        classifier = len(first) == 1 and first[0].dim() == 2 and first[0].shape[1] > 1
        check = cls(name, calibration, cases, classifier)
        if classifier:
            predicted = check._top1([c.expected[0] for c in cases])
            if predicted.unique().numel() < 2:
                raise ExportError(
                    f"model {name!r}: fp32 predicts class {int(predicted[0])} for every held-out calibration input, "
                    "so top-1 agreement of the int8 variant would prove nothing; calibrate on data the model tells "
                    "apart (docs/quantization.md)"
                )
        return check

    @staticmethod
    def _top1(logits: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(logits)).argmax(dim=1)

    def verify(self, variant: Variant, runner: Any, outputs: Sequence[Any]) -> list[VerificationRow]:
        """Bound rows on the held-out inputs; agreement and accuracy recorded, and refused below the policy."""
        try:
            atol = tolerance.int8_tolerance(self.model)
        except KeyError as e:
            raise ExportError(f"model {self.model!r}: {e.args[0]}") from None
        try:
            rows = verify(runner, variant.settings_key, "cpu", self.cases, outputs, self.model, atol)
        except ExportError as e:
            if variant.format == "pt2" and "shape" in str(e):  # seen once in a prototype (docs/quantization.md)
                raise ExportError(
                    f"{e}. This int8 package answered another batch size than it was given; make the int8 variant "
                    "as TorchScript only (--formats torchscript) or try another --max-batch-size"
                ) from e
            raise
        result: dict[str, Any] = {
            "inputs": f"{len(self.calibration.held_out)} held-out inputs of the calibration source",
            "max_abs": max(r.max_abs for r in rows),
            "bound": min(r.bound for r in rows),
        }
        if self.classifier:
            got = self._top1([runner(*c.inputs)[0] for c in self.cases])
            want = self._top1([c.expected[0] for c in self.cases])
            agreement = float((got == want).float().mean())
            need = tolerance.int8_agreement(self.model)
            result |= {"top1_agreement": agreement, "top1_agreement_bound": need}
            problems = [] if agreement >= need else [f"top-1 agreement with fp32 {agreement:.4f} < {need}"]
            if self.calibration.labels is not None:
                labels = self.calibration.labels
                accuracy = {
                    "int8": float((got == labels).float().mean()),
                    "fp32": float((want == labels).float().mean()),
                }
                result |= {"held_out_accuracy": accuracy, "accuracy_drop_bound": tolerance.INT8_ACCURACY_DROP}
                if accuracy["fp32"] - accuracy["int8"] > tolerance.INT8_ACCURACY_DROP:
                    problems.append(
                        f"held-out accuracy {accuracy['int8']:.4f} is more than {tolerance.INT8_ACCURACY_DROP} "
                        f"below fp32's {accuracy['fp32']:.4f}"
                    )
            if problems:
                raise ExportError(
                    f"model {self.model!r}: {variant.settings_key} artifact refused: {'; '.join(problems)}"
                )
        self.results[variant.settings_key] = result
        return rows

    def manifest(self) -> dict[str, Any]:
        return {
            "precision": PRECISION,
            "backend": BACKEND,
            "calibration": self.calibration.manifest(),
            "verification": self.results,
        }


def calibrate_batchnorm(model: nn.Module, calibration: Calibration) -> bool:
    """BatchNorm running statistics from the calibration inputs (a random-init model's are 0/1, which makes
    deep networks' logits explode and every input one class). Returns whether there was any BatchNorm."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration batches
        m.train()
    with torch.no_grad():
        for x in calibration.batches(CALIBRATION_BATCH):
            model(x)
    model.eval()
    return True
