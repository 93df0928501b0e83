"""Starting weights from a file on disk: torchvision ``.pth`` files, the book's files, torchship checkpoints.

The book saves plain ``state_dict``s (``birds_vs_airplanes.pt``, chapter 8) and
``{'model_state': ..., 'optimizer_state': ...}`` dicts (chapters 11-13);
torchvision ships plain ``state_dict``s. All of them load with
``weights_only=True``: a weight file never gets to run code here.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchship.training.checkpoint import FORMAT


class WeightsError(ValueError):
    """The file does not hold weights for this model."""


def file_kind(path: str | Path) -> str:
    """What a model file on disk is, from its container alone (nothing is unpickled or run).

    ``torchscript`` (torch.jit.save), ``pt2`` (an AOTInductor package or torch.export.save),
    ``onnx``, ``torch`` (torch.save: a state_dict, a checkpoint or a pickled object) or ``unknown``.
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if not zipfile.is_zipfile(path):
        return "torch" if path.suffix.lower() in (".pt", ".pth", ".ckpt", ".bin") else "unknown"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(n.endswith("/constants.pkl") or "/code/__torch__/" in n for n in names):
        return "torchscript"
    if path.suffix.lower() == ".pt2" or any(n.endswith("/archive_format") for n in names):
        return "pt2"
    return "torch" if any(n.endswith("/data.pkl") for n in names) else "unknown"


def refusal(path: Path, kind: str, error: Exception | None = None) -> str:
    """Why ``path`` cannot be read as weights, and what to do instead."""
    if kind in ("torchscript", "pt2", "onnx"):
        return (
            f"{path} is a {kind} artifact, not weights: adopt it as it is with `torchship import {path} --name NAME`, "
            "or, for TorchScript, save its weights with torch.save(torch.jit.load(path).state_dict(), 'weights.pt')"
        )
    classes = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(error)))) if error else []
    if classes:
        return (
            f"{path} holds pickled Python objects ({', '.join(classes[:3])}), e.g. a whole model saved with "
            "torch.save(model). torchship reads weights with torch.load(weights_only=True), which refuses to "
            "unpickle classes because unpickling can run any code in the file. Save the weights instead, where "
            "the model's class is defined: torch.save(model.state_dict(), 'weights.pt'), and pass that file"
        )
    return f"{path} is not a weights file torch can load safely: {error}"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` inside ``path``, whichever of the known layouts it uses."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} not found: expected a file saved with torch.save holding a state_dict "
            "(e.g. the book's birds_vs_airplanes.pt, a torchvision .pth) or a {'model_state': ...} dict"
        )
    kind = file_kind(path)
    if kind in ("torchscript", "pt2", "onnx"):
        raise WeightsError(refusal(path, kind))
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged or code-carrying files
        raise WeightsError(refusal(path, kind, e)) from e
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model_state"), dict):
        obj = obj["model_state"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} holds no state_dict (a non-empty mapping of names to tensors)")
    # Saved from DataParallel/DistributedDataParallel without unwrapping: drop the wrapper's prefix.
    if all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def load_weights(
    model: nn.Module, path: str | Path, partial: bool = False, partial_flag: str | None = "--partial-weights"
) -> list[str]:
    """Copies the file's weights into ``model``; returns the names left at their initial values.

    Strict by default: a missing, unexpected or differently shaped tensor is an
    error that names it. ``partial`` loads what matches and skips the rest
    (fine-tuning a model whose head has another number of classes); the error
    names ``partial_flag`` when the command offers one.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    mismatched = sorted(k for k in state.keys() & own.keys() if state[k].shape != own[k].shape)
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    if not partial and (mismatched or missing or unexpected):
        details = []
        if mismatched:
            shapes = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched[:5])
            details.append(f"shape mismatch: {shapes}")
        if missing:
            details.append(f"{len(missing)} missing: {_some(missing)}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected: {_some(unexpected)}")
        hint = f"; pass {partial_flag} to load only the tensors that fit" if partial_flag else ""
        raise WeightsError(f"{path} does not fit {type(model).__name__} ({'; '.join(details)}){hint}")
    usable = {k: v for k, v in state.items() if k in own and k not in mismatched}
    if not usable:
        raise WeightsError(f"{path} has no tensor that fits {type(model).__name__}")
    model.load_state_dict(usable, strict=False)
    return sorted(set(missing) | set(mismatched))


def _some(keys: list[str], shown: int = 5) -> str:
    return ", ".join(keys[:shown]) + (f" (and {len(keys) - shown} more)" if len(keys) > shown else "")
