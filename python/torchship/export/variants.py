"""The artifacts of one version as variants (docs/variants.md): format, device, precision, layout.

Export writes one file per variant and lists them in config.json's
``variants``, each with its worst verification row. Reduced precision and
channels_last exist as compiled ``.pt2`` variants: the model's floating weights
are cast (and 4-D ones made channels_last) before torch.export, and a thin
wrapper casts inputs in and outputs back, so the wire contract (config.json's
dtypes) never changes. TorchScript runs any of them by conversion at load
(the C++ runtime's job), so it stays one fp32 file.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchship.export.formats import artifact_name

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CHANNELS_LAST = "channels_last"
CONTIGUOUS = "contiguous"


@dataclass(frozen=True)
class Variant:
    format: str
    device: str  # "cpu" or "cuda": where it is compiled and verified
    precision: str = "fp32"
    layout: str = CONTIGUOUS

    @property
    def converted(self) -> bool:
        return self.precision != "fp32" or self.layout != CONTIGUOUS

    @property
    def tag(self) -> str:
        """``bf16-cl``, ``fp32-cl``, ``fp16``; empty for fp32 contiguous."""
        if not self.converted:
            return ""
        return self.precision + ("-cl" if self.layout == CHANNELS_LAST else "")

    @property
    def file(self) -> str:
        """``model.pt2``, ``model.cuda.pt2``, ``model.bf16-cl.pt2``, ``model.cuda.fp16.pt2``."""
        base = artifact_name(self.format, self.device)
        if not self.converted:
            return base
        stem, _, suffix = base.rpartition(".")
        return f"{stem}.{self.tag}.{suffix}"

    @property
    def settings_key(self) -> str:
        """The manifest's key for this artifact's settings: ``pt2``, ``pt2.cuda``, ``pt2.bf16-cl``."""
        parts = [self.format] + ([self.device] if self.device != "cpu" else []) + ([self.tag] if self.tag else [])
        return ".".join(parts)

    def record(self, rows: Sequence[Any]) -> dict[str, Any]:
        """config.json's entry: the fields of docs/variants.md and the worst row of this variant's verification."""
        device = "any" if self.format == "torchscript" else self.device
        entry: dict[str, Any] = {
            "file": self.file,
            "format": self.format,
            "device": device,
            "precision": self.precision,
            "layout": self.layout,
        }
        if rows:
            worst = max(rows, key=lambda r: (not r.ok, r.max_abs / r.bound if r.bound else float("inf")))
            entry["verification"] = {
                "max_abs": worst.max_abs,
                "bound": worst.bound,
                "ok": all(r.ok for r in rows),
                "cases": len(rows),
            }
        return entry


def parse(text: str, device: str = "cpu") -> Variant:
    """``bf16-cl`` -> a bf16 channels_last .pt2 for ``device``; ``fp32-cl``, ``fp16``, ``bf16`` likewise."""
    precision, _, layout = text.strip().lower().partition("-")
    if precision not in PRECISIONS or layout not in ("", "cl"):
        raise ValueError(
            f"unknown variant {text!r}: expected a precision ({', '.join(PRECISIONS)}) with an optional '-cl' "
            "(channels_last), e.g. bf16-cl"
        )
    if precision == "fp16" and device == "cpu":
        raise ValueError(
            f"variant {text!r} on the CPU: fp16 is compiled and verified only for CUDA (--device cuda); "
            "on the CPU use bf16"
        )
    return Variant("pt2", device, precision, CHANNELS_LAST if layout else CONTIGUOUS)


class Converted(nn.Module):
    """``model`` computing in ``dtype`` (and channels_last), fp32 (the declared dtypes) at its boundary."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, channels_last: bool, output_dtypes: Sequence[str]):
        super().__init__()
        from torchship.tensors import DTYPES

        self.model = model
        self.dtype = dtype
        self.channels_last = channels_last
        self.output_dtypes = [DTYPES[d] for d in output_dtypes]

    def _in(self, t: torch.Tensor) -> torch.Tensor:
        if t.is_floating_point():
            t = t.to(self.dtype)
        if self.channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from torchship.export.outputs import as_flat_tuple

        got = as_flat_tuple(self.model(*[self._in(t) for t in inputs]))
        return tuple(t.to(d).contiguous() for t, d in zip(got, self.output_dtypes, strict=True))


def convert(model: nn.Module, variant: Variant, output_dtypes: Sequence[str]) -> nn.Module:
    """A copy of ``model`` for ``variant``: floating parameters and buffers cast, 4-D ones channels_last."""
    dtype = PRECISIONS[variant.precision]
    channels_last = variant.layout == CHANNELS_LAST
    copied = copy.deepcopy(model)
    for t in [*copied.parameters(), *copied.buffers()]:
        if t.is_floating_point():
            t.data = t.data.to(dtype)
        if channels_last and t.dim() == 4:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
    return Converted(copied.to(variant.device), dtype, channels_last, output_dtypes).eval()
