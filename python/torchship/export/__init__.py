"""Export: any nn.Module (or a checkpoint) -> verified TorchScript / ONNX / .pt2 artifacts in a model repository."""

from torchship.export.errors import ExportError
from torchship.export.pipeline import ExportResult, export, export_checkpoint, export_registry_model
from torchship.export.source import RANDOM_INIT, random_init_checkpoint

__all__ = [
    "RANDOM_INIT",
    "ExportError",
    "ExportResult",
    "export",
    "export_checkpoint",
    "export_registry_model",
    "random_init_checkpoint",
]
