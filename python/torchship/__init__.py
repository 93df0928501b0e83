"""torchship: train the models of *Deep Learning with PyTorch*, export them, serve them natively.

The native runtime lives in ``torchship._C`` (built by CMake against the torch
installed beside it); ``torchship.runtime`` is its Pythonic facade.
"""

from __future__ import annotations

__version__ = "0.1.0"


def _check_native_build() -> None:
    """Refuse to load ``_C`` next to a torch other than the one it was compiled against.

    A mismatch otherwise surfaces as an ``undefined symbol`` error deep inside
    the dynamic loader, which tells the user nothing.
    """
    try:
        from torchship import _build_info
    except ImportError:  # not built yet (e.g. during the build itself)
        return
    import torch

    problem = _build_info.torch_mismatch(torch.__version__)
    if problem:
        raise ImportError(problem)


_check_native_build()

# The model registry's public API, imported on first use (it imports torch and the book's models):
# ``@torchship.register_model(...)``, ``torchship.get_model(name)``, ``torchship.list_models()``.
_REGISTRY_API = {
    "register_model": "torchship.models.registry",
    "get_model": "torchship.models.registry",
    "list_models": "torchship.models.registry",
    "TensorSpec": "torchship.models.registry",
    "Weights": "torchship.models.registry",
    "register_dataset": "torchship.training.recipes",
    "Dataset": "torchship.training.recipes",
    "DatasetOption": "torchship.training.recipes",
    "Hyperparameters": "torchship.training.recipes",
}


def __getattr__(name: str) -> object:
    if name in _REGISTRY_API:
        import importlib

        importlib.import_module("torchship.models")  # the book's models first: their names are taken
        return getattr(importlib.import_module(_REGISTRY_API[name]), name)
    raise AttributeError(f"module 'torchship' has no attribute {name!r}")
