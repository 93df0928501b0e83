"""The book's architectures. Importing this package registers every model."""

from torchship.models import cifar, cyclegan, imagenet, luna, row_sum, thermometer, unet  # noqa: F401  (registers)
from torchship.models.registry import ModelEntry, TensorSpec, get, names, register

__all__ = ["ModelEntry", "TensorSpec", "get", "names", "register"]
