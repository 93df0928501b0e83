"""Export: checkpoints -> verified TorchScript / ONNX / .pt2 artifacts in a model repository."""

from torchship.export.pipeline import ExportError, export_checkpoint

__all__ = ["ExportError", "export_checkpoint"]
