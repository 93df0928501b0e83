"""Where an export's weights come from: a checkpoint file, a state_dict file, or a random initialisation.

A registry name (or ``module:function``, a registered builder) builds the
architecture; its weights are the registry's random initialisation, or a plain
``state_dict`` file (``--weights``, loaded strictly with ``weights_only=True``).
All of them become the same in-memory checkpoint dict
(``training.checkpoint.make_checkpoint``), so export has one path. The weights'
label travels into the manifest and config.json: an untrained artifact must
never pass for a trained one. Files that are not weights (TorchScript, .pt2,
ONNX, a pickled whole module) are refused with what to do instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torchship import models
from torchship.training.checkpoint import FORMAT, CheckpointError, load_checkpoint, make_checkpoint, sha256
from torchship.training.weights import WeightsError, file_kind, load_weights, read_state_dict, refusal

RANDOM_INIT = "random-init (no checkpoint)"


@dataclass(frozen=True)
class Source:
    """A checkpoint dict and its provenance."""

    checkpoint: dict[str, Any]
    path: Path | None  # the checkpoint file; None: built in memory
    sha256: str  # of the file; "random-init" or "in-memory" otherwise
    weights_file: Path | None = None  # a state_dict file the in-memory checkpoint's weights came from

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
        if self.weights_file is not None:
            return f"state_dict {self.weights_file.name} (sha256 {self.sha256[:12]})"
        return "in-memory checkpoint"

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": str(self.path) if self.path else None, "sha256": self.sha256}
        if self.random_init:
            out["init_seed"] = self.checkpoint.get("training", {}).get("init_seed")
        if self.weights_file is not None:
            out["weights_file"] = str(self.weights_file)
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


def with_weights(model_name: str, weights: str | Path, model_args: dict[str, Any] | None = None) -> Source:
    """A registry architecture with the weights of a plain state_dict file (strict: every key must fit)."""
    path = Path(weights)
    entry = models.get(model_name)
    args = dict(model_args or {})
    model = entry.build(**args)
    load_weights(model, path, partial_flag=None)
    label = f"state_dict {path.name}"
    checkpoint = make_checkpoint(entry.name, model, args, training={"weights": label, "weights_file": str(path)})
    return Source(checkpoint, None, sha256(path), weights_file=path)


def resolve(
    spec: str | Path,
    model_args: dict[str, Any] | None = None,
    init_seed: int = 0,
    *,
    prefer_file: bool = True,
    weights: str | Path | None = None,
) -> Source:
    """A command-line source: a checkpoint file, or a registry name / ``module:function`` (random init, or
    the state_dict file ``weights``)."""
    path = Path(spec)
    if prefer_file and path.is_file():
        if weights is not None:
            raise ValueError(f"{path} is a file; --weights goes with a registered architecture's name")
        if model_args:
            raise ValueError(f"{path} is a checkpoint and carries its model_args; --model-args is for registry names")
        return _checkpoint_file(path)
    name = str(spec)
    if name in models.names() or ":" in name:
        entry = models.get(name)  # module:function imports the module; errors say what is missing
        if weights is not None:
            return with_weights(entry.name, weights, model_args)
        return from_checkpoint(random_init_checkpoint(entry.name, model_args, init_seed))
    raise ValueError(
        f"{spec!s} is neither a checkpoint file nor a registered model; registered models: {', '.join(models.names())}"
        ". A model of your own: register it (@torchship.register_model) and pass its name, or MODULE:FUNCTION"
    )


def _checkpoint_file(path: Path) -> Source:
    """A torchship checkpoint; anything else on disk gets a message saying what it is and what to do."""
    kind = file_kind(path)
    if kind in ("torchscript", "pt2", "onnx"):
        raise ValueError(refusal(path, kind))
    try:
        return from_checkpoint(path)
    except CheckpointError as e:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as load_error:  # a pickled module, or a damaged file
            raise ValueError(refusal(path, kind, load_error)) from e
        if isinstance(obj, dict) and obj.get("format") == FORMAT:
            raise  # a torchship checkpoint, damaged: its own message says how
        try:
            read_state_dict(path)
        except WeightsError:
            raise e from None
        raise ValueError(
            f"{path} holds a plain state_dict, not a torchship checkpoint: name the architecture it belongs to, "
            f"`torchship export ARCHITECTURE --weights {path}` (registered: {', '.join(models.names())})"
        ) from e


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes: identifies the weights whatever file held them."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
