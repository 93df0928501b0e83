"""Model outputs of any common structure, flattened to named tensors with a batch dimension.

A model may return a tensor, a tuple or list, a dict, or any nesting of them.
Export flattens the structure depth-first, in the order Python iterates it
(dict keys in insertion order), and names each tensor by its path:

    tensor                         -> "output"
    (a, b)  or  [a, b]             -> "output.0", "output.1"
    {"out": a, "aux": b}           -> "out", "aux"
    {"x": (a, b), "y": {"z": c}}   -> "x.0", "x.1", "y.z"

Every artifact returns the flat tuple in that order (``FlatOutputs`` wraps a
model whose output is not already a tensor or a flat tuple of tensors), so the
C++ runtime, the server and ONNX Runtime see the same named outputs. Names may
be declared instead (``outputs=``), in the same order.

Each output must carry the batch in dimension 0, and its other sizes may
depend only on the input shapes, never on the values: a server concatenates
requests along dimension 0 and splits the answer back by rows. Anything else
is refused at export, naming the output and the supported way.
"""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

DETECTION_HINT = (
    "wrap the model in torchship.export.detection.PaddedDetections, which pads boxes, scores and labels "
    "to a fixed number per image and adds a count (docs/export.md)"
)


class OutputStructureError(ValueError):
    """An output the serving contract cannot carry; the message names it and the supported way."""


def _flatten(obj: Any, path: tuple[str, ...], out: list[tuple[tuple[str, ...], torch.Tensor]]) -> None:
    if isinstance(obj, torch.Tensor):
        out.append((path, obj))
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            _flatten(value, (*path, str(key)), out)
    elif isinstance(obj, (tuple, list)):
        for i, value in enumerate(obj):
            _flatten(value, (*path, str(i)), out)
    else:
        where = ".".join(path) or "the output"
        raise OutputStructureError(
            f"{where} is a {type(obj).__name__}; outputs must be tensors, or tuples, lists and dicts of them"
        )


def _name(path: tuple[str, ...], top_is_dict: bool) -> str:
    if not path:
        return "output"
    return ".".join(path) if top_is_dict else ".".join(("output", *path))


def flatten(obj: Any) -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for every tensor of a model's output, in the documented order."""
    found: list[tuple[tuple[str, ...], torch.Tensor]] = []
    _flatten(obj, (), found)
    top_is_dict = isinstance(obj, Mapping)
    return [(_name(path, top_is_dict), t) for path, t in found]


def is_flat(obj: Any) -> bool:
    """A tensor or a flat tuple/list of tensors: artifacts can return it as it is."""
    if isinstance(obj, torch.Tensor):
        return True
    return isinstance(obj, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in obj)


def as_flat_tuple(obj: Any) -> tuple[torch.Tensor, ...]:
    return tuple(t for _, t in flatten(obj))


class FlatOutputs(nn.Module):
    """``model`` returning its outputs as one flat tuple in the documented order (see module docstring).

    Traced or exported, the flattening is plain Python over a structure fixed at
    export, so it leaves nothing in the graph but the tensors themselves.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # Not train(): that recurses, and would put an eval model back into training (ExportedProgram
        # modules refuse it outright).
        self.training = model.training

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return as_flat_tuple(self.model(*inputs))


def flat_outputs(model: nn.Module, input_names: Sequence[str]) -> FlatOutputs:
    """``FlatOutputs(model)`` whose forward takes the inputs by name: TorchScript names its forward schema's
    arguments after them (a trace of ``*inputs`` around a scripted model would say ``argument_1``), and the
    C++ runtime checks that schema against config.json. Names that are not identifiers keep ``*inputs``."""
    if not all(n.isidentifier() and not keyword.iskeyword(n) for n in input_names):
        return FlatOutputs(model)
    named = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature([inspect.Parameter(n, named) for n in ("self", *input_names)])

    def forward(self: FlatOutputs, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return as_flat_tuple(self.model(*inputs))

    forward.__signature__ = signature  # type: ignore[attr-defined]  # what torch.jit.trace and torch.export read
    named_class = type("FlatOutputs", (FlatOutputs,), {"forward": forward, "__module__": __name__})
    return named_class(model)


def _per_sample_list(obj: Any, batch: int) -> str | None:
    """The path of a list whose length is the batch and whose items are dicts/tuples (per-image results)."""
    if isinstance(obj, list) and len(obj) == batch and obj and not isinstance(obj[0], torch.Tensor):
        return ""
    if isinstance(obj, Mapping):
        items: Any = obj.items()
    elif isinstance(obj, (tuple, list)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        inner = _per_sample_list(value, batch)
        if inner is not None:
            return ".".join(p for p in (str(key), inner) if p)
    return None


def check_structure(results: Sequence[tuple[int, Any]]) -> list[str]:
    """The flat output names, after checking eager's outputs at several batch sizes agree on one structure.

    ``results`` pairs a batch size with the model's raw output at it; at least
    two batch sizes, or per-sample lists cannot be told from fixed ones.
    """
    names: list[str] | None = None
    for batch, raw in results:
        got = [n for n, _ in flatten(raw)]
        if names is None:
            names = got
            continue
        if got == names:
            continue
        per_sample = _per_sample_list(raw, batch)
        if per_sample is not None:
            where = f"output '{per_sample}'" if per_sample else "the output"
            raise OutputStructureError(
                f"{where} is a list with one entry per input row (batch {batch}): per-sample results such as "
                f"detections cannot be batched by the server; {DETECTION_HINT}"
            )
        raise OutputStructureError(
            f"the output's structure changes with the input: {names} at one batch size, {got} at batch {batch}; "
            "return the same tensors every time"
        )
    return names or []


def check_batched(name: str, observed: Sequence[tuple[tuple[tuple[int, ...], ...], torch.Tensor]]) -> tuple[int, ...]:
    """The output's spec shape: -1 for the batch and for sizes that follow the input shapes.

    ``observed`` pairs the input shapes (batch included) of each eager run with
    the output there; two runs share input shapes, so sizes that depend on the
    values (detections after NMS, ``nonzero``) show. Such an output, or one
    whose dimension 0 is not the batch, is refused, naming it and what to do.
    """
    by_inputs: dict[tuple[tuple[int, ...], ...], tuple[int, ...]] = {}
    for input_shapes, t in observed:
        seen = by_inputs.setdefault(input_shapes, tuple(t.shape))
        if seen != tuple(t.shape):
            raise OutputStructureError(
                f"output '{name}' has data-dependent sizes: {list(seen)} and {list(t.shape)} for inputs of the same "
                f"shape; pad it to a fixed size plus a count — for detection models, {DETECTION_HINT}"
            )
    for input_shapes, shape in by_inputs.items():
        batch = input_shapes[0][0]
        if not shape or shape[0] != batch:
            raise OutputStructureError(
                f"output '{name}' has shape {list(shape)} at batch {batch}: it has no batch dimension (dimension 0 "
                "must be the batch, so the server can batch requests and split the answer by rows); return one row "
                "per input row, e.g. expand a per-model value to (batch, ...)"
            )
    ranks = {len(s) for s in by_inputs.values()}
    if len(ranks) > 1:
        raise OutputStructureError(f"output '{name}' changes rank with the input: {sorted(ranks)}")
    shapes = list(by_inputs.values())
    dynamic = {i for i in range(1, len(shapes[0])) if len({s[i] for s in shapes}) > 1}
    return (-1, *(-1 if i in dynamic else d for i, d in enumerate(shapes[0]) if i > 0))
