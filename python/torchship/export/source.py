"""Where an export's weights come from: a checkpoint file, or the registry's random initialisation.

Both become the same in-memory checkpoint dict (``training.checkpoint.make_checkpoint``),
so export has one path. A random-init checkpoint is labelled as such, and the
label travels into the manifest and config.json: an untrained artifact must
never pass for a trained one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torchship import models
from torchship.training.checkpoint import load_checkpoint, make_checkpoint, sha256

RANDOM_INIT = "random-init (no checkpoint)"


@dataclass(frozen=True)
class Source:
    """A checkpoint dict and its provenance."""

    checkpoint: dict[str, Any]
    path: Path | None  # None: built in memory
    sha256: str  # of the file; "random-init" or "in-memory" otherwise

    @property
    def random_init(self) -> bool:
        return self.checkpoint.get("weights") == RANDOM_INIT

    @property
    def weights(self) -> str:
        """The label manifest.json and config.json carry."""
        if self.random_init:
            return RANDOM_INIT
        if self.path is not None:
            return f"checkpoint {self.path.name} (sha256 {self.sha256[:12]})"
        return "in-memory checkpoint"

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": str(self.path) if self.path else None, "sha256": self.sha256}
        if self.random_init:
            out["init_seed"] = self.checkpoint.get("training", {}).get("init_seed")
        return out


def random_init_checkpoint(model_name: str, model_args: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """A registry model, freshly initialised under ``seed`` (the global RNG is left as it was), as a checkpoint."""
    entry = models.get(model_name)
    args = dict(model_args or {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = entry.build(**args)
    return make_checkpoint(
        model_name, model, args, training={"weights": RANDOM_INIT, "init_seed": seed}, weights=RANDOM_INIT
    )


def from_checkpoint(checkpoint: str | Path | dict[str, Any]) -> Source:
    if isinstance(checkpoint, dict):
        label = "random-init" if checkpoint.get("weights") == RANDOM_INIT else "in-memory"
        return Source(checkpoint, None, label)
    path = Path(checkpoint)
    return Source(load_checkpoint(path), path, sha256(path))


def resolve(
    spec: str | Path, model_args: dict[str, Any] | None = None, init_seed: int = 0, *, prefer_file: bool = True
) -> Source:
    """A command-line source: an existing checkpoint file, else a registry name (random init)."""
    path = Path(spec)
    if prefer_file and path.is_file():
        if model_args:
            raise ValueError(f"{path} is a checkpoint and carries its model_args; --model-args is for registry names")
        return from_checkpoint(path)
    if str(spec) in models.names():
        return from_checkpoint(random_init_checkpoint(str(spec), model_args, init_seed))
    raise ValueError(
        f"{spec!s} is neither a checkpoint file nor a registered model; registered models: {', '.join(models.names())}"
    )


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes: identifies the weights whatever file held them."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
