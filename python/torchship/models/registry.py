"""The model registry: architectures, their weights variants, and the names export and training look up.

Two things are kept apart, as torchvision's models API keeps them:

- an *architecture* (``Architecture``): a builder (any callable returning an
  ``nn.Module``) and its interface (input/output specs, how TorchScript captures
  it, the batch it serves);
- a *weights variant* (``Weights``): what one set of weights for it means —
  class names (labels), class count, preprocessing, the data set it trains on
  (recipes follow it), metrics. Chapter 8's ``Net`` is one architecture with a
  CIFAR-2 variant (``net``) and a digits variant (``digits_net``).

Every variant has a name of its own; ``get(name)`` returns the ``ModelEntry``
(architecture and variant resolved into one record) that checkpoints, export,
parity and the recipes use. ``register_model`` is the decorator packages use;
models from installed packages come in through the ``torchship.models``
entry-point group (``models.plugins``), loaded on the first lookup.

(Weights variants are not the artifact variants of docs/variants.md: those are
precision/layout/format copies of one exported model.)
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

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
        object.__setattr__(self, "shape", tuple(self.shape))  # a list from user code would make specs unhashable
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
class Weights:
    """One weights variant of an architecture: what a set of weights for it means (torchvision's ``Weights``).

    ``name`` is the registry name (unique across all models). ``num_classes``
    defaults to the number of labels; the architecture's builder receives it
    as ``num_classes=`` when it takes that argument (torchvision's convention),
    unless ``model_args`` says otherwise. ``outputs`` replaces the
    architecture's when this variant changes them (another class count).
    ``dataset`` names a registered data set (``torchship.training.recipes``):
    ``torchship train`` offers a recipe for every variant whose data set is
    registered. ``recipe`` overrides that data set's default hyperparameters
    (``epochs``, ``batch_size``, ``learning_rate``, ``momentum``); ``metrics``
    are reported results (e.g. the book's accuracies), JSON-serialisable.
    """

    name: str
    labels: Sequence[str] | None = None
    num_classes: int | None = None
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    model_args: Mapping[str, Any] = field(default_factory=dict)
    outputs: Sequence[TensorSpec] | None = None
    description: str = ""
    recipe: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelEntry:
    """One registry name: an architecture with one weights variant resolved, as everything downstream reads it."""

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
    architecture: str = ""  # "" = an architecture of its own, named like the entry
    dataset: str | None = None
    num_classes: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.architecture:
            object.__setattr__(self, "architecture", self.name)
        if self.num_classes is None and self.labels:
            object.__setattr__(self, "num_classes", len(self.labels))

    def build(self, **overrides: Any) -> nn.Module:
        return self.constructor(**{**self.default_args, **overrides})

    def example_shape(self, spec: TensorSpec) -> tuple[int, ...]:
        shape = self.example_shapes.get(spec.name, spec.shape)
        return tuple(1 if d == -1 else d for d in shape)


@dataclass(frozen=True)
class Architecture:
    """A builder; ``weights`` are the registry names of its weights variants, the default first."""

    name: str
    builder: Callable[..., nn.Module]
    weights: tuple[str, ...]
    module: str  # where the builder is defined: list_models(module=...) filters on it


class UnknownModelError(KeyError):
    """A name the registry does not hold; a KeyError whose message reads as a sentence."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


_REGISTRY: dict[str, ModelEntry] = {}
_ARCHITECTURES: dict[str, Architecture] = {}
_BUILDERS: dict[Any, str] = {}  # builder -> architecture name, for module:function lookups

M = TypeVar("M", bound=Callable[..., nn.Module])


def register(entry: ModelEntry) -> ModelEntry:
    """Adds one entry; its architecture is recorded (or extended) under ``entry.architecture``."""
    _check_free(entry)
    arch = _ARCHITECTURES.get(entry.architecture)
    if arch is not None and arch.builder is not entry.constructor:
        raise ValueError(
            f"architecture {entry.architecture!r} is registered twice with different builders "
            f"({_qualname(arch.builder)} and {_qualname(entry.constructor)})"
        )
    _REGISTRY[entry.name] = entry
    weights = (*arch.weights, entry.name) if arch else (entry.name,)
    _ARCHITECTURES[entry.architecture] = Architecture(
        entry.architecture, entry.constructor, weights, getattr(entry.constructor, "__module__", "") or ""
    )
    _BUILDERS.setdefault(entry.constructor, entry.architecture)
    return entry


def register_model(
    name: str | None = None,
    *,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    weights: Sequence[Weights] = (),
    description: str | None = None,
    default_args: Mapping[str, Any] | None = None,
    example_shapes: Mapping[str, Sequence[int]] | None = None,
    torchscript: str = "trace",
    max_batch_size: int = 64,
) -> Callable[[M], M]:
    """Registers the decorated builder as an architecture (named ``name`` or the builder's ``__name__``).

    ``weights`` are its weights variants, the first the default; without them it
    has one, named like the architecture, with no labels.
    The builder is returned unchanged::

        @torchship.register_model(inputs=[TensorSpec("x", (-1, 2))], outputs=[TensorSpec("logits", (-1, 2))])
        def my_mlp(hidden: int = 16) -> nn.Module: ...
    """
    if torchscript not in ("trace", "script"):
        raise ValueError(f"torchscript must be 'trace' or 'script', not {torchscript!r}")

    def wrapper(builder: M) -> M:
        arch = name or getattr(builder, "__name__", None)
        if not arch:
            raise ValueError(f"register_model: {builder!r} has no __name__; pass name=")
        common = {
            "constructor": builder,
            "inputs": tuple(inputs),
            "description": description if description is not None else _first_line(builder.__doc__) or arch,
            "example_shapes": {k: tuple(s) for k, s in (example_shapes or {}).items()},
            "torchscript": torchscript,
            "max_batch_size": max_batch_size,
            "architecture": arch,
        }
        declared = list(weights) or [Weights(arch)]
        entries = [_weights_entry(w, common, tuple(outputs), dict(default_args or {})) for w in declared]
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise ValueError(f"architecture {arch!r} declares a weights name twice: {names}")
        for entry in entries:  # all checked before any is registered
            _check_free(entry)
        for entry in entries:
            register(entry)
        return builder

    return wrapper


def _weights_entry(
    v: Weights, common: dict[str, Any], outputs: tuple[TensorSpec, ...], default_args: dict[str, Any]
) -> ModelEntry:
    """The architecture's fields (``common``) with one variant's meaning applied."""
    labels = tuple(v.labels) if v.labels is not None else None
    if labels is not None and len(set(labels)) != len(labels):
        raise ValueError(f"weights {v.name!r}: labels repeat a name")
    num_classes = v.num_classes if v.num_classes is not None else (len(labels) if labels else None)
    if labels and num_classes != len(labels):
        raise ValueError(f"weights {v.name!r}: num_classes {num_classes} but {len(labels)} labels")
    args = dict(default_args)
    if num_classes is not None and _takes(common["constructor"], "num_classes"):
        args["num_classes"] = num_classes
    args.update(v.model_args)
    specs = tuple(v.outputs) if v.outputs is not None else outputs
    if num_classes is not None and not any(s.shape[-1] == num_classes for s in specs):
        raise ValueError(
            f"weights {v.name!r} of {common['architecture']!r} have {num_classes} classes but no output ends in a "
            f"dimension of {num_classes} ({[list(s.shape) for s in specs]}); declare Weights(..., outputs=...)"
        )
    return ModelEntry(
        **{**common, "description": v.description or common["description"]},
        name=v.name,
        outputs=specs,
        default_args=args,
        labels=labels,
        preprocessing=copy.deepcopy(dict(v.preprocessing)),
        dataset=v.dataset,
        num_classes=num_classes,
        metrics=copy.deepcopy(dict(v.metrics)),
        recipe=dict(v.recipe),
    )


def _takes(builder: Callable[..., Any], parameter: str) -> bool:
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return parameter in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n", 1)[0].strip()


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _check_free(entry: ModelEntry) -> None:
    if entry.name in _REGISTRY:
        first = _qualname(_REGISTRY[entry.name].constructor)
        raise ValueError(f"model {entry.name!r} is registered twice ({first} and {_qualname(entry.constructor)})")


# --- lookups (each loads the installed packages' models first) ------------------


def _discover() -> None:
    from torchship.models import plugins

    plugins.load_group(plugins.MODELS_GROUP)


def get(name: str) -> ModelEntry:
    """The entry of a registry name, or of ``module:function`` (a registered builder; the module is imported)."""
    _discover()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        return _REGISTRY[_architecture_default(_builder_from_path(name), name)]
    raise UnknownModelError(
        f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}. Models of other packages "
        "come from their 'torchship.models' entry points (pip install the package) or from "
        "`torchship --import MODULE ...`"
    )


def names() -> list[str]:
    """Every registry name (one per weights variant), sorted."""
    _discover()
    return sorted(_REGISTRY)


def list_models(module: str | ModuleType | None = None) -> list[str]:
    """The registry names, optionally only those whose builder is defined in ``module`` (or a submodule)."""
    _discover()
    if module is None:
        return sorted(_REGISTRY)
    prefix = module if isinstance(module, str) else module.__name__
    return sorted(
        n
        for n, e in _REGISTRY.items()
        if (m := _ARCHITECTURES[e.architecture].module) == prefix or m.startswith(f"{prefix}.")
    )


def get_model(name: str, **config: Any) -> nn.Module:
    """A freshly initialised model of a registry name (its variant's arguments, overridden by ``config``)."""
    return get(name).build(**config)


def get_architecture(name: str) -> Architecture:
    """An architecture by its name, or by the name of one of its weights variants."""
    _discover()
    if name in _ARCHITECTURES:
        return _ARCHITECTURES[name]
    if name in _REGISTRY:
        return _ARCHITECTURES[_REGISTRY[name].architecture]
    raise UnknownModelError(f"unknown architecture {name!r}; registered: {', '.join(sorted(_ARCHITECTURES))}")


def architectures() -> list[str]:
    _discover()
    return sorted(_ARCHITECTURES)


def _builder_from_path(path: str) -> Any:
    from torchship.models.plugins import import_module

    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise UnknownModelError(f"{path!r}: expected MODULE:FUNCTION, e.g. my_package.models:my_net")
    module = import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UnknownModelError(f"{path!r}: module {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _architecture_default(builder: Any, path: str) -> str:
    arch = _BUILDERS.get(builder) if _hashable(builder) else None
    if arch is None:
        raise UnknownModelError(
            f"{path} is not a registered model builder: decorate it with @torchship.register_model(inputs=..., "
            "outputs=...) so export, parity and the runtime know its interface (README: Deploy your own model)"
        )
    return _ARCHITECTURES[arch].weights[0]


def _hashable(obj: Any) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True
