"""The model registry and the book's architectures. Importing this package registers every book model.

``register_model`` / ``get_model`` / ``list_models`` are the public API (also as
``torchship.register_model`` ...); models of installed packages come in through
the ``torchship.models`` entry-point group on the first lookup.
"""

from torchship.models import cifar, cyclegan, imagenet, luna, row_sum, thermometer, unet  # noqa: F401  (registers)
from torchship.models.registry import (
    Architecture,
    ModelEntry,
    TensorSpec,
    Weights,
    architectures,
    get,
    get_architecture,
    get_model,
    list_models,
    names,
    register,
    register_model,
)

__all__ = [
    "Architecture",
    "ModelEntry",
    "TensorSpec",
    "Weights",
    "architectures",
    "get",
    "get_architecture",
    "get_model",
    "list_models",
    "names",
    "register",
    "register_model",
]
