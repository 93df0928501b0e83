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
    """A named tensor. ``shape[0]`` is the batch dimension and is -1; other -1s are dynamic.

    ``multiple_of`` and ``min_shape`` (same rank as ``shape``) constrain dynamic
    dimensions where the architecture needs it: a U-Net that halves a size three
    times takes multiples of 8, smaller or other sizes crop or fail inside the
    model. They travel to config.json, and the runtime refuses such inputs by name.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "FP32"  # Open Inference Protocol datatype name
    multiple_of: tuple[int, ...] | None = None
    min_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for field_name in ("multiple_of", "min_shape"):
            value = getattr(self, field_name)
            if value is not None and (len(value) != len(self.shape) or any(v < 1 for v in value)):
                raise ValueError(
                    f"{self.name}: {field_name} {list(value)} must be >= 1 per dimension of {list(self.shape)}"
                )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "datatype": self.dtype, "shape": list(self.shape)}
        if self.multiple_of:
            d["multiple_of"] = list(self.multiple_of)
        if self.min_shape:
            d["min_shape"] = list(self.min_shape)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TensorSpec:
        multiple_of, min_shape = d.get("multiple_of"), d.get("min_shape")
        return TensorSpec(
            name=d["name"],
            shape=tuple(d["shape"]),
            dtype=d.get("datatype", "FP32"),
            multiple_of=tuple(multiple_of) if multiple_of else None,
            min_shape=tuple(min_shape) if min_shape else None,
        )

    def shape_problem(self, shape: tuple[int, ...]) -> str | None:
        """Why ``shape`` (batch included) does not fit this spec, or None when it does."""
        if len(shape) != len(self.shape) or any(s not in (-1, d) for s, d in zip(self.shape, shape, strict=True)):
            return f"does not fit its spec {list(self.shape)}"
        for i in range(1, len(shape)):
            if self.multiple_of and shape[i] % self.multiple_of[i]:
                return f"dimension {i} is {shape[i]}, not a multiple of {self.multiple_of[i]}"
            if self.min_shape and shape[i] < self.min_shape[i]:
                return f"dimension {i} is {shape[i]}, below the minimum {self.min_shape[i]}"
        return None


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
