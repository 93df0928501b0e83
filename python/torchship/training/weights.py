"""Starting weights from a file on disk: torchvision ``.pth`` files, the book's files, torchship checkpoints.

The book saves plain ``state_dict``s (``birds_vs_airplanes.pt``, chapter 8) and
``{'model_state': ..., 'optimizer_state': ...}`` dicts (chapters 11-13);
torchvision ships plain ``state_dict``s. All of them load with
``weights_only=True``: a weight file never gets to run code here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchship.training.checkpoint import FORMAT


class WeightsError(ValueError):
    """The file does not hold weights for this model."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` inside ``path``, whichever of the known layouts it uses."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} not found: expected a file saved with torch.save holding a state_dict "
            "(e.g. the book's birds_vs_airplanes.pt, a torchvision .pth) or a {'model_state': ...} dict"
        )
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged or code-carrying files
        raise WeightsError(f"{path} is not a weights file torch can load safely: {e}") from e
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


def load_weights(model: nn.Module, path: str | Path, partial: bool = False) -> list[str]:
    """Copies the file's weights into ``model``; returns the names left at their initial values.

    Strict by default: a missing, unexpected or differently shaped tensor is an
    error that names it. ``partial`` loads what matches and skips the rest
    (fine-tuning a model whose head has another number of classes).
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
            details.append(f"missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            details.append(f"unexpected: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        raise WeightsError(
            f"{path} does not fit {type(model).__name__} ({'; '.join(details)}); "
            "pass --partial-weights to load only the tensors that fit"
        )
    usable = {k: v for k, v in state.items() if k in own and k not in mismatched}
    if not usable:
        raise WeightsError(f"{path} has no tensor that fits {type(model).__name__}")
    model.load_state_dict(usable, strict=False)
    return sorted(set(missing) | set(mismatched))
