"""checkpoint -> verified artifacts + config.json + manifest.json in a model repository.

Layout (docs/architecture.md):
    <repository>/<model>/config.json
    <repository>/<model>/<version>/{model.pt, model.onnx, model.pt2, manifest.json}

Every artifact is reloaded in its own runtime and compared with eager PyTorch
on fresh random inputs at batch sizes 1, 3 and max_batch_size. If any
comparison fails, nothing is written and ExportError carries the table.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torchship import models, tolerance
from torchship.export import formats
from torchship.models.registry import TensorSpec
from torchship.training.checkpoint import build_model, load_checkpoint, sha256

ALL_FORMATS = ("torchscript", "onnx", "pt2")
_DTYPES = {
    "FP32": torch.float32,
    "FP64": torch.float64,
    "INT64": torch.int64,
    "INT32": torch.int32,
    "UINT8": torch.uint8,
}


class ExportError(RuntimeError):
    """An artifact could not be written or did not match eager PyTorch."""


@dataclass(frozen=True)
class VerificationRow:
    format: str
    output: str
    batch_size: int
    max_abs: float
    mean_abs: float
    atol: float

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.atol


@dataclass
class ExportResult:
    model: str
    version: int
    directory: Path
    rows: list[VerificationRow]


def format_table(rows: Sequence[VerificationRow]) -> str:
    lines = [f"{'format':<12} {'output':<14} {'batch':>5} {'max abs':>10} {'mean abs':>10} {'tol':>7}  result"]
    for r in rows:
        lines.append(
            f"{r.format:<12} {r.output:<14} {r.batch_size:>5} {r.max_abs:>10.3g} {r.mean_abs:>10.3g} "
            f"{r.atol:>7g}  {'ok' if r.ok else 'FAIL'}"
        )
    return "\n".join(lines)


def random_inputs(
    specs: Sequence[TensorSpec], shapes: Sequence[tuple[int, ...]], batch: int, seed: int
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for spec, shape in zip(specs, shapes, strict=True):
        dtype = _DTYPES[spec.dtype]
        full = (batch, *shape[1:])
        out.append(
            torch.randn(full, generator=g, dtype=dtype) if dtype.is_floating_point else torch.zeros(full, dtype=dtype)
        )
    return out


def _next_version(model_dir: Path) -> int:
    existing = (
        [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()] if model_dir.is_dir() else []
    )
    return max(existing, default=0) + 1


def _config(
    name: str,
    ckpt: dict[str, Any],
    inputs: Sequence[TensorSpec],
    shapes: Sequence[tuple[int, ...]],
    max_batch_size: int,
) -> dict[str, Any]:
    return {
        "name": name,
        "platform": "torchship",
        "source_model": ckpt["model"],
        "max_batch_size": max_batch_size,
        "inputs": [{**s.to_dict(), "example_shape": list(shape)} for s, shape in zip(inputs, shapes, strict=True)],
        "outputs": ckpt["outputs"],
        "dynamic_batching": {"max_queue_delay_microseconds": 0, "max_queue_size": 128},
        "instance_group": {"count": 1},
        "warmup": {"batch_sizes": [1, max_batch_size]},
        "labels": ckpt.get("labels"),
        "preprocessing": ckpt.get("preprocessing", {}),
    }


def _versions() -> dict[str, str]:
    out = {"torch": str(torch.__version__)}
    for mod in ("onnx", "onnxruntime", "onnxscript"):
        with contextlib.suppress(ImportError):
            out[mod] = __import__(mod).__version__
    return out


def export_checkpoint(
    checkpoint: str | Path,
    repository: str | Path,
    formats_: Sequence[str] = ALL_FORMATS,
    *,
    name: str | None = None,
    version: int | None = None,
    max_batch_size: int | None = None,
    seed: int = 1234,
) -> ExportResult:
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    entry = models.get(ckpt["model"])
    name = name or ckpt["model"]
    max_batch = max_batch_size or entry.max_batch_size
    unknown = set(formats_) - set(ALL_FORMATS)
    if unknown:
        raise ExportError(f"unknown format(s) {sorted(unknown)}; choose from {', '.join(ALL_FORMATS)}")

    model = build_model(ckpt)
    for p in model.parameters():
        p.requires_grad_(False)  # the book's advice: a no_grad block does not make a traced model gradient-free
    inputs = [TensorSpec.from_dict(d) for d in ckpt["inputs"]]
    outputs = [TensorSpec.from_dict(d) for d in ckpt["outputs"]]
    shapes = [tuple(ckpt.get("example_shapes", {}).get(s.name, entry.example_shape(s))) for s in inputs]
    # Batch 2 for the example: torch.export specialises a dimension traced at size 1.
    example = random_inputs(inputs, shapes, batch=2, seed=seed - 1)

    repository = Path(repository)
    model_dir = repository / name
    version = version or _next_version(model_dir)
    version_dir = model_dir / str(version)
    if version_dir.exists():
        raise ExportError(f"{version_dir} already exists; pick another --version")
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=repository))
    rows: list[VerificationRow] = []
    timings: dict[str, float] = {}
    try:
        for fmt in formats_:
            path = staging / formats.ARTIFACT_NAMES[fmt]
            started = time.perf_counter()
            try:
                if fmt == "torchscript":
                    formats.export_torchscript(model, example, path, entry.torchscript)
                    runner = formats.load_torchscript(path)
                elif fmt == "onnx":
                    formats.export_onnx(
                        model, example, path, [s.name for s in inputs], [s.name for s in outputs], max_batch
                    )
                    runner = formats.load_onnx(path)
                else:
                    formats.export_pt2(model, example, path, max_batch)
                    runner = formats.load_pt2(path)
            except Exception as e:
                raise ExportError(f"model {name!r}: {fmt} export failed: {type(e).__name__}: {e}") from e
            timings[fmt] = round(time.perf_counter() - started, 3)
            atol = tolerance.tolerance(fmt)
            for batch in sorted({1, 3, max_batch}):
                if batch > max_batch:
                    continue
                x = random_inputs(inputs, shapes, batch, seed + batch)
                with torch.no_grad():
                    expected = formats.as_tuple(model(*x))
                try:
                    got = runner(*x)
                except Exception as e:
                    raise ExportError(f"model {name!r}: {fmt} artifact failed to run at batch {batch}: {e}") from e
                if len(got) != len(expected):
                    raise ExportError(f"model {name!r}: {fmt} returned {len(got)} outputs, eager {len(expected)}")
                for spec, g, e in zip(outputs, got, expected, strict=True):
                    c = tolerance.compare(g, e, atol)
                    rows.append(VerificationRow(fmt, spec.name, batch, c.max_abs, c.mean_abs, atol))
        if not all(r.ok for r in rows):
            raise ExportError(f"model {name!r}: verification against eager PyTorch failed\n{format_table(rows)}")
        manifest = {
            "model": name,
            "version": version,
            "source_checkpoint": {"path": str(checkpoint), "sha256": sha256(checkpoint)},
            "registry_model": ckpt["model"],
            "model_args": ckpt["model_args"],
            "versions": _versions(),
            "export": {
                "formats": list(formats_),
                "torchscript_method": entry.torchscript,
                "onnx_opset": formats.ONNX_OPSET,
                "onnx_dynamo": True,
                "dynamic_batch": {"min": 1, "max": max_batch},
                "example_shapes": {s.name: list(shape) for s, shape in zip(inputs, shapes, strict=True)},
                "seconds": timings,
            },
            "artifacts": {
                fmt: {"file": formats.ARTIFACT_NAMES[fmt], "sha256": sha256(staging / formats.ARTIFACT_NAMES[fmt])}
                for fmt in formats_
            },
            "verification": [r.__dict__ | {"ok": r.ok} for r in rows],
            "metrics": ckpt.get("metrics", {}),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "config.json").write_text(json.dumps(_config(name, ckpt, inputs, shapes, max_batch), indent=2))
        staging.rename(version_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return ExportResult(name, version, version_dir, rows)
