"""Verification: every artifact, reloaded in its own runtime, against eager PyTorch on CPU in fp32.

Inputs are fresh random tensors (not the example the artifact was traced
with) at batch sizes 1, 3 and max_batch_size, plus other feature shapes for
models with dynamic H/W. Eager outputs are computed once per case and shared by
all formats; one more eager draw at a batch already used shows outputs whose
sizes or values do not follow the inputs (data-dependent sizes, degenerate
references). Every comparison goes through ``torchship.tolerance``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from torchship import tolerance
from torchship.export import outputs as structure
from torchship.export.errors import ExportError, root_cause
from torchship.export.formats import Runner
from torchship.export.shapes import Shape, ValueRange, format_shape, random_inputs
from torchship.models.registry import TensorSpec
from torchship.tensors import datatype_of


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
    scale: float = 1.0  # max |eager output|: the policy's bound is atol * scale


@dataclass(frozen=True)
class Case:
    """One comparison point: inputs at a batch size and feature shape, and eager's answer (flattened)."""

    batch_size: int
    sample_shape: str
    inputs: tuple[torch.Tensor, ...]
    expected: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Eager:
    """Eager PyTorch's answers: the cases artifacts are compared on, and every run (cases plus a second
    draw at one batch size, so sizes or values that follow the input values show) as raw structures."""

    cases: list[Case]
    runs: list[tuple[tuple[Shape, ...], Any]]  # (input shapes with the batch, raw output)


def verification_batches(max_batch_size: int) -> list[int]:
    return sorted({b for b in (1, 3, max_batch_size) if b <= max_batch_size})


def run_eager(
    model: torch.nn.Module,
    model_name: str,
    inputs: Sequence[TensorSpec],
    examples: Sequence[Shape],
    extra_shapes: Sequence[Sequence[Shape]],
    max_batch_size: int,
    seed: int,
    value_ranges: Mapping[str, ValueRange] | None = None,
) -> Eager:
    """Eager outputs at batch sizes 1, 3 and max (and the extra feature shapes), plus one more draw."""
    plans = [(b, list(examples)) for b in verification_batches(max_batch_size)]
    plans += [(min(3, max_batch_size), list(shapes)) for shapes in extra_shapes]
    plans.append((min(3, max_batch_size), list(examples)))  # the second draw: compared with eager only
    cases, runs = [], []
    for i, (batch, shapes) in enumerate(plans):
        x = random_inputs(inputs, shapes, batch, seed + 1000 * i + batch, value_ranges)
        try:
            with torch.no_grad():
                raw = model(*x)
        except Exception as e:
            at = f"batch {batch}, input {format_shape(shapes[0][1:])}"
            raise ExportError(f"model {model_name!r}: eager PyTorch failed at {at}: {root_cause(e)}") from e
        runs.append((tuple(tuple(t.shape) for t in x), raw))
        if i < len(plans) - 1:
            cases.append(Case(batch, format_shape(shapes[0][1:]), tuple(x), ()))
    return Eager(cases, runs)


def output_specs(
    eager: Eager, model_name: str, declared: Sequence[TensorSpec] | Sequence[str] | None = None
) -> tuple[list[TensorSpec], list[Case]]:
    """The output specs (declared, or derived from eager's outputs) and the cases with their flat answers.

    Raises ExportError naming the output when the structure cannot be served
    (no batch dimension, data-dependent sizes, per-sample lists) or eager
    disagrees with a declaration."""
    try:
        names = structure.check_structure([(shapes[0][0], raw) for shapes, raw in eager.runs])
        flat = [structure.as_flat_tuple(raw) for _, raw in eager.runs]
        derived = [
            structure.check_batched(name, [(shapes, f[i]) for (shapes, _), f in zip(eager.runs, flat, strict=True)])
            for i, name in enumerate(names)
        ]
    except structure.OutputStructureError as e:
        raise ExportError(f"model {model_name!r}: {e}") from e
    declared = list(declared or [])
    if declared and len(declared) != len(names):
        shown = ", ".join(d.name if isinstance(d, TensorSpec) else d for d in declared)
        raise ExportError(
            f"model {model_name!r}: eager PyTorch returned {len(names)} output(s) ({', '.join(names)}); "
            f"{len(declared)} are declared ({shown})"
        )
    specs = []
    for i, name in enumerate(names):
        dtype = datatype_of(flat[0][i].dtype)
        given = declared[i] if declared else name
        if isinstance(given, TensorSpec):
            for (shapes, _), f in zip(eager.runs, flat, strict=True):
                t = f[i]
                if given.shape_problem(tuple(t.shape)) or t.shape[0] != shapes[0][0]:
                    raise ExportError(
                        f"model {model_name!r}: eager output '{given.name}' has shape {list(t.shape)} at batch "
                        f"{shapes[0][0]}; the registry declares {list(given.shape)}"
                    )
            specs.append(given)
        else:
            specs.append(TensorSpec(given, derived[i], dtype))
    cases = [dataclasses.replace(c, expected=f) for c, f in zip(eager.cases, flat, strict=False)]
    return specs, cases


def degenerate_outputs(eager: Eager, specs: Sequence[TensorSpec]) -> dict[str, str]:
    """Output name -> why eager's values of it prove nothing (tolerance.degenerate), for each such output."""
    flat = [structure.as_flat_tuple(raw) for _, raw in eager.runs]
    found = {}
    for i, spec in enumerate(specs):
        reason = tolerance.degenerate([f[i] for f in flat])
        if reason:
            found[spec.name] = reason
    return found


def verify(
    runner: Runner,
    fmt: str,
    device: str,
    cases: Sequence[Case],
    outputs: Sequence[TensorSpec],
    model_name: str,
    atol: float | None = None,
) -> list[VerificationRow]:
    """Run every case through ``runner``; comparison failures become rows, a crash an ExportError.
    ``atol`` defaults to the policy's for ``fmt`` on ``device``."""
    atol = tolerance.tolerance(fmt, device) if atol is None else atol
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
    ``tol`` is the policy's bound for the row: atol times max |eager output|."""
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
            f"> tolerance {r.bound:.3g} ({r.atol:g} x output magnitude {r.scale:.3g})"
        )
    return "\n".join(lines) + "\n" + format_table(rows)
