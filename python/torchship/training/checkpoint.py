"""The one checkpoint format every recipe writes and export reads.

A plain dict saved with ``torch.save`` and read with ``weights_only=True``:
model registry name and constructor args, ``state_dict``, the interface
(input/output specs, labels, preprocessing), metrics, training config and
the torch version. Recipes that can be continued add ``resume``: the epochs
done, the optimizer's ``state_dict`` and the samples seen, so that
``--resume`` picks up exactly where the run stopped.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchship import models

FORMAT = "torchship-checkpoint/1"
REQUIRED_KEYS = ("format", "model", "model_args", "state_dict", "inputs", "outputs")
RESUME_KEYS = ("epoch", "optimizer", "samples_seen")


class CheckpointError(ValueError):
    """The file is not a torchship checkpoint, or is damaged."""


def make_checkpoint(
    model_name: str,
    model: nn.Module,
    model_args: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    training: dict[str, Any] | None = None,
    resume: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    entry = models.get(model_name)
    if resume is not None:
        missing = [k for k in RESUME_KEYS if k not in resume]
        if missing:
            raise ValueError(f"resume state lacks {', '.join(missing)}")
        extra["resume"] = dict(resume)
    return {
        "format": FORMAT,
        "model": model_name,
        "model_args": dict(model_args or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "inputs": [s.to_dict() for s in entry.inputs],
        "outputs": [s.to_dict() for s in entry.outputs],
        "labels": list(entry.labels) if entry.labels else None,
        "preprocessing": dict(entry.preprocessing),
        "metrics": dict(metrics or {}),
        "training": dict(training or {}),
        "torch_version": str(torch.__version__),
        **extra,
    }


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged files
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a torchship checkpoint (expected format {FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    return ckpt


def resume_state(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> dict[str, Any]:
    """The state ``--resume`` continues from; an error when the checkpoint was written without one."""
    state = ckpt.get("resume")
    if not isinstance(state, dict) or any(k not in state for k in RESUME_KEYS):
        raise CheckpointError(
            f"{path} holds no resume state (epoch, optimizer, samples_seen): it was not written by a resumable recipe"
        )
    return state


def build_model(ckpt: dict[str, Any]) -> nn.Module:
    """Reconstructs the trained model from a checkpoint, in eval mode."""
    model = models.get(ckpt["model"]).build(**ckpt["model_args"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
