"""Shapes for export: example inputs, dynamic dimensions, and the shapes verification runs at.

A spec's dimension 0 is the batch (-1); any other -1 is dynamic (CycleGAN's H
and W). The batch becomes one ``torch.export.Dim`` bounded by max_batch_size and
shared by every input; other dynamic dimensions become ``Dim.DYNAMIC``, so
torch.export infers their valid range (e.g. H >= 5 for CycleGAN) instead of us
guessing it, and fails loudly if the model specialises them to a constant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from torchship.models.registry import ModelEntry, TensorSpec
from torchship.tensors import DTYPES

# torch.export specialises a dimension whose example size is 0 or 1, so examples use batch 2.
EXAMPLE_BATCH = 2

Shape = tuple[int, ...]


def parse_shape(text: str) -> Shape:
    """``"1x3x64x64"`` -> ``(1, 3, 64, 64)``."""
    try:
        dims = tuple(int(d) for d in text.lower().replace(",", "x").split("x") if d)
    except ValueError:
        raise ValueError(f"bad shape {text!r}: expected sizes joined by 'x', e.g. 1x3x64x64") from None
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"bad shape {text!r}: every size must be >= 1")
    return dims


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def has_dynamic_features(specs: Sequence[TensorSpec]) -> bool:
    """True when some input has a dynamic dimension other than the batch."""
    return any(d == -1 for s in specs for d in s.shape[1:])


def check_against_spec(spec: TensorSpec, shape: Sequence[int], what: str) -> Shape:
    """``shape`` (batch included) fits ``spec``: same rank, fixed dimensions equal, multiples and minimums kept."""
    shape = tuple(shape)
    problem = spec.shape_problem(shape)
    if problem:
        raise ValueError(f"{what} {format_shape(shape)} for '{spec.name}': {problem}")
    return shape


def example_shapes(
    entry: ModelEntry,
    specs: Sequence[TensorSpec],
    checkpoint_shapes: Mapping[str, Sequence[int]],
    overrides: Mapping[str, Sequence[int]] | None,
) -> list[Shape]:
    """One concrete shape per input: an override, else the checkpoint's, else the registry's example."""
    out = []
    for spec in specs:
        given = (overrides or {}).get(spec.name) or checkpoint_shapes.get(spec.name)
        shape = tuple(given) if given else entry.example_shape(spec)
        out.append(check_against_spec(spec, shape, "example shape"))
    unknown = set(overrides or {}) - {s.name for s in specs}
    if unknown:
        raise ValueError(f"example shape for unknown input(s) {sorted(unknown)}; inputs: {[s.name for s in specs]}")
    return out


def extra_verification_shapes(
    specs: Sequence[TensorSpec], examples: Sequence[Shape], given: Mapping[str, Sequence[Sequence[int]]] | None
) -> list[list[Shape]]:
    """Other feature shapes to verify at, beyond the example's, for models with dynamic non-batch dims.

    ``given`` lists shapes per input name (all inputs must list as many). Without
    it, each dynamic dimension is doubled: a size the artifact was not traced at,
    and one that keeps whatever divisibility the example had (UNet needs
    multiples of 2**(depth-1)).
    """
    if given:
        unknown = set(given) - {s.name for s in specs}
        if unknown:
            raise ValueError(f"verify shape for unknown input(s) {sorted(unknown)}; inputs: {[s.name for s in specs]}")
        counts = {len(given.get(s.name, ())) for s in specs}
        if len(counts) != 1:
            raise ValueError("verify shapes must list the same number of shapes for every input")
        n = counts.pop()
        return [[check_against_spec(s, tuple(given[s.name][i]), "verify shape") for s in specs] for i in range(n)]
    if not has_dynamic_features(specs):
        return []
    doubled = [
        tuple(d if spec_d != -1 or i == 0 else 2 * d for i, (spec_d, d) in enumerate(zip(s.shape, ex, strict=True)))
        for s, ex in zip(specs, examples, strict=True)
    ]
    return [doubled]


ValueRange = tuple[int, int]


def random_inputs(
    specs: Sequence[TensorSpec],
    shapes: Sequence[Sequence[int]],
    batch: int,
    seed: int,
    value_ranges: Mapping[str, ValueRange] | None = None,
) -> list[torch.Tensor]:
    """Fresh inputs at ``batch`` rows: standard normal floats; integers uniform in the input's
    ``value_ranges`` entry (both ends included), bools random, other integers zero (indices stay valid)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for spec, shape in zip(specs, shapes, strict=True):
        dtype = DTYPES[spec.dtype]
        full = (batch, *shape[1:])
        low_high = (value_ranges or {}).get(spec.name)
        if dtype.is_floating_point:
            out.append(torch.randn(full, generator=g, dtype=torch.float32).to(dtype))
        elif dtype == torch.bool:
            out.append(torch.randint(0, 2, full, generator=g).to(torch.bool))
        elif low_high is not None:
            out.append(torch.randint(low_high[0], low_high[1] + 1, full, generator=g).to(dtype))
        else:
            out.append(torch.zeros(full, dtype=dtype))
    return out


def observed_range(t: torch.Tensor) -> ValueRange | None:
    """[min, max] of an integer example, the values verification draws from; None for floats and bools."""
    if t.is_floating_point() or t.dtype == torch.bool or t.numel() == 0:
        return None
    return int(t.min()), int(t.max())


def example_batch(max_batch_size: int) -> int:
    """The batch size artifacts are traced and exported at: EXAMPLE_BATCH, or 1 where that is the most."""
    return min(EXAMPLE_BATCH, max_batch_size)


def dynamic_shapes(specs: Sequence[TensorSpec], max_batch_size: int) -> tuple[dict[int, Any], ...]:
    """The ``dynamic_shapes`` argument of torch.export / torch.onnx.export, one dict per input."""
    # A model served one item at a time has a static batch of 1 (a Dim needs min < max).
    batch = torch.export.Dim("batch", min=1, max=max_batch_size) if max_batch_size > 1 else torch.export.Dim.STATIC
    out = []
    for spec in specs:
        dims: dict[int, Any] = {0: batch}
        for i, d in enumerate(spec.shape[1:], start=1):
            if d == -1:
                dims[i] = torch.export.Dim.DYNAMIC
        out.append(dims)
    return tuple(out)


def describe_dynamic_shapes(specs: Sequence[TensorSpec], max_batch_size: int) -> dict[str, dict[str, str]]:
    """The manifest's readable form of ``dynamic_shapes``."""
    return {
        s.name: {
            str(i): (
                (f"batch [1, {max_batch_size}]" if max_batch_size > 1 else "batch 1 (static)")
                if i == 0
                else "dynamic (range inferred by torch.export)"
            )
            for i, d in enumerate(s.shape)
            if d == -1
        }
        for s in specs
    }


def _bound(value: object) -> int | None:
    text = str(value)  # sympy Integer, or int_oo / -int_oo for unbounded
    return int(text) if text.lstrip("-").isdigit() else None


def exported_ranges(
    program: torch.export.ExportedProgram, names: Sequence[str]
) -> dict[str, dict[str, list[int | None]]]:
    """Per input (by spec name, in order) and dynamic dimension, the [min, max] torch.export settled on."""
    ranges = {str(sym): vr for sym, vr in program.range_constraints.items()}
    user_inputs = list(program.graph_signature.user_inputs)
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    out: dict[str, dict[str, list[int | None]]] = {}
    for name, node_name in zip(names, user_inputs, strict=True):
        val = placeholders[node_name].meta.get("val") if node_name in placeholders else None
        dims: dict[str, list[int | None]] = {}
        for i, d in enumerate(getattr(val, "shape", ())):
            if isinstance(d, torch.SymInt) and str(d.node.expr) in ranges:
                vr = ranges[str(d.node.expr)]
                dims[str(i)] = [_bound(vr.lower), _bound(vr.upper)]
        if dims:
            out[name] = dims
    return out
