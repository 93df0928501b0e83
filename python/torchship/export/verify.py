"""Verification: every artifact, reloaded in its own runtime, against eager PyTorch on CPU in fp32.

Inputs are fresh random tensors (not the example the artifact was traced
with) at batch sizes 1, 3 and max_batch_size, plus other feature shapes for
models with dynamic H/W. Eager outputs are computed once per case and shared by
all formats. Every comparison goes through ``torchship.tolerance``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from torchship import tolerance
from torchship.export.errors import ExportError, root_cause
from torchship.export.formats import Runner, as_tuple
from torchship.export.shapes import Shape, format_shape, random_inputs
from torchship.models.registry import TensorSpec


@dataclass(frozen=True)
class VerificationRow(tolerance.WithinBound):
    format: str
    output: str
    batch_size: int
    max_abs: float
    mean_abs: float
    atol: float
    device: str = "cpu"
    sample_shape: str = ""  # the first input's shape without the batch, e.g. "3x64x64"
    scale: float = 1.0  # max(1, max |eager output|): the policy's bound is atol * scale


@dataclass(frozen=True)
class Case:
    """One comparison point: inputs at a batch size and feature shape, and eager's answer."""

    batch_size: int
    sample_shape: str
    inputs: tuple[torch.Tensor, ...]
    expected: tuple[torch.Tensor, ...]


def verification_batches(max_batch_size: int) -> list[int]:
    return sorted({b for b in (1, 3, max_batch_size) if b <= max_batch_size})


def build_cases(
    model: torch.nn.Module,
    model_name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    examples: Sequence[Shape],
    extra_shapes: Sequence[Sequence[Shape]],
    max_batch_size: int,
    seed: int,
) -> list[Case]:
    """Eager outputs for every case; also checks they match the declared output specs."""
    plans = [(b, list(examples)) for b in verification_batches(max_batch_size)]
    plans += [(min(3, max_batch_size), list(shapes)) for shapes in extra_shapes]
    cases = []
    for i, (batch, shapes) in enumerate(plans):
        x = random_inputs(inputs, shapes, batch, seed + 1000 * i + batch)
        try:
            with torch.no_grad():
                y = as_tuple(model(*x))
        except Exception as e:
            at = f"batch {batch}, input {format_shape(shapes[0][1:])}"
            raise ExportError(f"model {model_name!r}: eager PyTorch failed at {at}: {root_cause(e)}") from e
        if len(y) != len(outputs):
            raise ExportError(
                f"model {model_name!r}: eager PyTorch returned {len(y)} output(s); the registry declares "
                f"{len(outputs)} ({', '.join(o.name for o in outputs)})"
            )
        for spec, t in zip(outputs, y, strict=True):
            if spec.shape_problem(tuple(t.shape)) or t.shape[0] != batch:
                raise ExportError(
                    f"model {model_name!r}: eager output '{spec.name}' has shape {list(t.shape)} at batch {batch}; "
                    f"the registry declares {list(spec.shape)}"
                )
        cases.append(Case(batch, format_shape(shapes[0][1:]), tuple(x), y))
    return cases


def verify(
    runner: Runner,
    fmt: str,
    device: str,
    cases: Sequence[Case],
    outputs: Sequence[TensorSpec],
    model_name: str,
) -> list[VerificationRow]:
    """Run every case through ``runner``; comparison failures become rows, a crash an ExportError."""
    atol = tolerance.tolerance(fmt, device)
    where = f"model {model_name!r}: {fmt} artifact on {device}"
    rows = []
    for case in cases:
        at = f"batch {case.batch_size}, input {case.sample_shape or 'scalar'}"
        try:
            got = runner(*case.inputs)
        except Exception as e:
            raise ExportError(f"{where} failed to run at {at}: {root_cause(e)}") from e
        if len(got) != len(case.expected):
            raise ExportError(f"{where} returned {len(got)} outputs at {at}; eager returned {len(case.expected)}")
        for spec, g, e in zip(outputs, got, case.expected, strict=True):
            try:
                c = tolerance.compare(g, e, atol)
            except AssertionError as err:  # shape or dtype differs
                raise ExportError(f"{where}: output '{spec.name}' at {at}: {err}") from err
            rows.append(
                VerificationRow(
                    fmt, spec.name, case.batch_size, c.max_abs, c.mean_abs, atol, device, case.sample_shape, c.scale
                )
            )
    return rows


def format_table(rows: Sequence[VerificationRow]) -> str:
    """Device and input-shape columns appear only when they vary, so the common table stays short.
    ``tol`` is the policy's bound for the row: atol times max(1, max |eager output|)."""
    show_device = any(r.device != "cpu" for r in rows)
    show_shape = len({r.sample_shape for r in rows}) > 1
    head = f"{'format':<12}"
    head += f" {'device':<6}" if show_device else ""
    head += f" {'output':<14} {'batch':>5}"
    head += f" {'input':>12}" if show_shape else ""
    lines = [head + f" {'max abs':>10} {'mean abs':>10} {'tol':>7}  result"]
    for r in rows:
        line = f"{r.format:<12}"
        line += f" {r.device:<6}" if show_device else ""
        line += f" {r.output:<14} {r.batch_size:>5}"
        line += f" {r.sample_shape:>12}" if show_shape else ""
        line += f" {r.max_abs:>10.3g} {r.mean_abs:>10.3g} {r.bound:>7.2g}  {'ok' if r.ok else 'FAIL'}"
        lines.append(line)
    return "\n".join(lines)


def failure_summary(model_name: str, rows: Sequence[VerificationRow]) -> str:
    failed = [r for r in rows if not r.ok]
    lines = [f"model {model_name!r}: verification against eager PyTorch (CPU, fp32) failed:"]
    for r in failed:
        lines.append(
            f"  {r.format} on {r.device}: output '{r.output}' at batch {r.batch_size}"
            f"{', input ' + r.sample_shape if r.sample_shape else ''}: max abs difference {r.max_abs:.3g} "
            f"> tolerance {r.bound:.3g}" + (f" ({r.atol:g} x output magnitude {r.scale:.3g})" if r.scale > 1 else "")
        )
    return "\n".join(lines) + "\n" + format_table(rows)
