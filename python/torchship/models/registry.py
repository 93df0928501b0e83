"""The model registry: one entry per architecture of the book.

An entry names a constructor and everything downstream needs to know about
the model's interface (input/output specs, labels, preprocessing), so that
export, the runtime and the server never re-declare them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor. ``shape[0]`` is the batch dimension and is -1; other -1s are dynamic."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "FP32"  # Open Inference Protocol datatype name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.dtype, "shape": list(self.shape)}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TensorSpec:
        return TensorSpec(name=d["name"], shape=tuple(d["shape"]), dtype=d.get("datatype", "FP32"))


@dataclass(frozen=True)
class ModelEntry:
    name: str
    constructor: Callable[..., nn.Module]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    description: str
    default_args: dict[str, Any] = field(default_factory=dict)
    # A concrete example shape per input (batch 1) for tracing/warm-up where the spec has dynamic dims.
    example_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    labels: tuple[str, ...] | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    # "trace" or "script": how TorchScript export captures the model.
    torchscript: str = "trace"
    max_batch_size: int = 64

    def build(self, **overrides: Any) -> nn.Module:
        return self.constructor(**{**self.default_args, **overrides})

    def example_shape(self, spec: TensorSpec) -> tuple[int, ...]:
        shape = self.example_shapes.get(spec.name, spec.shape)
        return tuple(1 if d == -1 else d for d in shape)


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} is registered twice")
    _REGISTRY[entry.name] = entry
    return entry


def get(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}") from None


def names() -> list[str]:
    return sorted(_REGISTRY)
