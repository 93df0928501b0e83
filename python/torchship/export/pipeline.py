"""checkpoint -> verified artifacts + config.json + manifest.json in a model repository.

Layout (docs/architecture.md):
    <repository>/<model>/config.json
    <repository>/<model>/<version>/{model.pt, model.onnx, model.pt2, model.cuda.pt2, manifest.json}

Every artifact is reloaded in its own runtime and compared with eager PyTorch
on fresh random inputs at batch sizes 1, 3 and max_batch_size (and, for dynamic
H/W, at other sizes). Everything is written into a hidden staging directory
first; if any export or comparison fails, nothing is left behind and
ExportError names the model, the format and the cause.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import json
import logging
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from torchship import models
from torchship.export import formats, shapes, toolchain
from torchship.export.errors import ExportError, root_cause
from torchship.export.formats import ALL_FORMATS
from torchship.export.shapes import Shape, random_inputs
from torchship.export.source import Source, from_checkpoint, random_init_checkpoint, weights_digest
from torchship.export.verify import VerificationRow, build_cases, failure_summary, format_table, verify
from torchship.models.registry import TensorSpec
from torchship.training.checkpoint import build_model, sha256

__all__ = [
    "ALL_FORMATS",
    "ExportError",
    "ExportResult",
    "VerificationRow",
    "export_checkpoint",
    "export_registry_model",
    "format_table",
    "random_inputs",
]

log = logging.getLogger("torchship.export")
DEVICES = ("cpu", "cuda")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass
class ExportResult:
    model: str
    version: int
    directory: Path
    rows: list[VerificationRow]
    weights: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


def _next_version(model_dir: Path) -> int:
    existing = (
        [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()] if model_dir.is_dir() else []
    )
    return max(existing, default=0) + 1


def _config(
    name: str,
    ckpt: dict[str, Any],
    inputs: Sequence[TensorSpec],
    examples: Sequence[Shape],
    max_batch_size: int,
    weights: str,
) -> dict[str, Any]:
    """What cpp/src/model_config.cpp parses; ``source_model`` and ``weights`` are for people."""
    return {
        "name": name,
        "platform": "torchship",
        "source_model": ckpt["model"],
        "weights": weights,
        "max_batch_size": max_batch_size,
        "inputs": [{**s.to_dict(), "example_shape": list(shape)} for s, shape in zip(inputs, examples, strict=True)],
        "outputs": ckpt["outputs"],
        "dynamic_batching": {"max_queue_delay_microseconds": 0, "max_queue_size": 128},
        "instance_group": {"count": 1},
        "warmup": {"batch_sizes": sorted({1, max_batch_size})},
        "labels": ckpt.get("labels"),
        "preprocessing": ckpt.get("preprocessing", {}),
    }


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": str(torch.__version__)}
    for mod in ("onnx", "onnxruntime", "onnxscript"):
        with contextlib.suppress(ImportError):
            out[mod] = __import__(mod).__version__
    return out


def _write_json(path: Path, data: Any) -> None:
    """Atomically: the runtime may be scanning the repository while we write."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def _staging(repository: Path, name: str) -> Iterator[Path]:
    """A hidden directory beside the versions; removed on failure, with the repository if we created it."""
    created = not repository.exists()
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-staging-", dir=repository))
    try:
        yield staging
    except BaseException:
        if created:
            shutil.rmtree(repository, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_request(formats_: Sequence[str], devices: Sequence[str]) -> None:
    unknown = set(formats_) - set(ALL_FORMATS)
    if unknown or not formats_:
        raise ExportError(f"unknown format(s) {sorted(unknown)}; choose from {', '.join(ALL_FORMATS)}")
    bad = set(devices) - set(DEVICES)
    if bad or not devices:
        raise ExportError(f"unknown device(s) {sorted(bad)}; choose from {', '.join(DEVICES)}")
    if "cuda" in devices and not torch.cuda.is_available():
        raise ExportError("--device cuda: CUDA is not available here, and a CUDA artifact must be verified on a GPU")


def _targets(formats_: Sequence[str], devices: Sequence[str]) -> list[tuple[str, str]]:
    """(format, device) pairs to export and verify: .pt2 per device; TorchScript checked on each device
    (the C++ runtime loads model.pt on CUDA too); ONNX on CPU (ONNX Runtime's CPU provider)."""
    out = []
    for fmt in formats_:
        for device in devices:
            if fmt == "onnx" and device != "cpu":
                continue
            out.append((fmt, device))
    return out


def export_checkpoint(
    checkpoint: str | Path | dict[str, Any] | Source,
    repository: str | Path,
    formats_: Sequence[str] = ALL_FORMATS,
    *,
    name: str | None = None,
    version: int | None = None,
    max_batch_size: int | None = None,
    seed: int = 1234,
    devices: Sequence[str] = ("cpu",),
    example_shapes: Mapping[str, Sequence[int]] | None = None,
    verify_shapes: Mapping[str, Sequence[Sequence[int]]] | None = None,
    torchscript_method: str | None = None,
) -> ExportResult:
    """Export one checkpoint (a file, an in-memory dict, or a resolved Source) into ``repository``.

    ``example_shapes`` overrides the registry's example (batch included, as
    ``{"image": (1, 3, 64, 64)}``) where the spec has dynamic dims; ``verify_shapes``
    lists further shapes verification must pass at (default for dynamic H/W:
    each dynamic size doubled). ``seed`` drives the example and verification inputs.
    """
    formats_ = list(dict.fromkeys(formats_))
    devices = list(dict.fromkeys(devices))
    _check_request(formats_, devices)
    source = checkpoint if isinstance(checkpoint, Source) else from_checkpoint(checkpoint)
    ckpt = source.checkpoint
    entry = models.get(ckpt["model"])
    name = name or ckpt["model"]
    if not _NAME.fullmatch(name):
        raise ExportError(f"model name {name!r} is not a valid repository name (letters, digits, '_', '.', '-')")
    max_batch = max_batch_size or entry.max_batch_size
    if max_batch < 1:
        raise ExportError(f"max_batch_size must be >= 1, not {max_batch}")
    method = torchscript_method or entry.torchscript
    inputs = [TensorSpec.from_dict(d) for d in ckpt["inputs"]]
    outputs = [TensorSpec.from_dict(d) for d in ckpt["outputs"]]
    try:
        examples = shapes.example_shapes(entry, inputs, ckpt.get("example_shapes", {}), example_shapes)
        extra = shapes.extra_verification_shapes(inputs, examples, verify_shapes)
    except ValueError as e:
        raise ExportError(f"model {name!r}: {e}") from e

    model = build_model(ckpt)
    for p in model.parameters():
        p.requires_grad_(False)  # the book's advice: a no_grad block does not make a traced model gradient-free
    example = random_inputs(inputs, examples, batch=shapes.EXAMPLE_BATCH, seed=seed - 1)
    dynamic = shapes.dynamic_shapes(inputs, max_batch)
    cases = build_cases(model, name, inputs, outputs, examples, extra, max_batch, seed)

    repository = Path(repository)
    model_dir = repository / name
    version = version or _next_version(model_dir)
    if version < 1:
        raise ExportError(f"version must be >= 1, not {version}")
    version_dir = model_dir / str(version)
    if version_dir.exists():
        raise ExportError(f"{version_dir} already exists; pick another --version")

    log.info("%s: exporting %s (%s) from %s", name, ", ".join(formats_), ", ".join(devices), source.weights)
    rows: list[VerificationRow] = []
    seconds: dict[str, float] = {}
    settings: dict[str, Any] = {}
    artifacts: list[dict[str, Any]] = []
    with _staging(repository, name) as staging, toolchain.strict_fp32():
        for fmt, device in _targets(formats_, devices):
            file = formats.artifact_name(fmt, device)
            path = staging / file
            key = formats.settings_key(fmt, device)
            started = time.perf_counter()
            try:
                if not path.exists():  # TorchScript is written once and checked on every device
                    settings.update(_write(fmt, device, model, example, path, inputs, outputs, dynamic, method))
                    artifact = {"file": file, "format": fmt, "bytes": path.stat().st_size, "sha256": sha256(path)}
                    artifacts.append(artifact | ({"device": device} if fmt == "pt2" else {}))
                runner = formats.LOADERS[fmt](path, device)
            except Exception as e:
                raise ExportError(f"model {name!r}: {fmt} export for {device} failed: {root_cause(e)}") from e
            exported = time.perf_counter()
            new_rows = verify(runner, fmt, device, cases, outputs, name)
            rows += new_rows
            seconds[key] = round(exported - started, 3)
            seconds[f"{key} verify"] = round(time.perf_counter() - exported, 3)
            worst = max((r.max_abs for r in new_rows), default=0.0)
            log.info(
                "%s: %-11s %-4s exported in %6.1f s, verified in %5.1f s (%d comparisons, max abs %.2g)%s",
                name,
                fmt,
                device,
                seconds[key],
                seconds[f"{key} verify"],
                len(new_rows),
                worst,
                "" if all(r.ok for r in new_rows) else "  FAIL",
            )
        if not all(r.ok for r in rows):
            raise ExportError(failure_summary(name, rows))

        manifest = {
            "model": name,
            "version": version,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "registry_model": ckpt["model"],
            "description": entry.description,
            "model_args": ckpt["model_args"],
            "weights": source.weights,
            "source_checkpoint": source.manifest(),
            "weights_sha256": weights_digest(ckpt["state_dict"]),
            "versions": _versions(),
            "export": {
                "formats": formats_,
                "devices": devices,
                "max_batch_size": max_batch,
                "dynamic_shapes": shapes.describe_dynamic_shapes(inputs, max_batch),
                "example_shapes": {s.name: list(x) for s, x in zip(inputs, examples, strict=True)},
                "verification_shapes": [{s.name: list(x) for s, x in zip(inputs, xs, strict=True)} for xs in extra],
                "verification_batch_sizes": sorted({c.batch_size for c in cases}),
                "seed": seed,
                **settings,
                "seconds": seconds,
            },
            "artifacts": artifacts,
            "tolerance": {"reference": "eager PyTorch, CPU, fp32", "policy": "docs/tolerance.md"},
            "verification": [dataclasses.asdict(r) | {"bound": r.bound, "ok": r.ok} for r in rows],
            "metrics": ckpt.get("metrics", {}),
            "training": ckpt.get("training", {}),
        }
        _write_json(staging / "manifest.json", manifest)
        model_dir.mkdir(parents=True, exist_ok=True)
        staging.rename(version_dir)
    _write_json(model_dir / "config.json", _config(name, ckpt, inputs, examples, max_batch, source.weights))
    log.info("%s: version %d -> %s", name, version, version_dir)
    return ExportResult(name, version, version_dir, rows, source.weights, seconds)


def _write(
    fmt: str,
    device: str,
    model: torch.nn.Module,
    example: Sequence[torch.Tensor],
    path: Path,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    dynamic: tuple[dict[int, Any], ...],
    method: str,
) -> dict[str, Any]:
    """Writes one artifact; returns the settings the manifest records for it."""
    if fmt == "torchscript":
        tracer_warnings = formats.export_torchscript(model, example, path, method)
        return {"torchscript": {"method": method, "tracer_warnings_inside_torch": tracer_warnings}}
    if fmt == "onnx":
        used = formats.export_onnx(model, example, path, [s.name for s in inputs], [s.name for s in outputs], dynamic)
        return {"onnx": used | {"runtime": "onnxruntime CPUExecutionProvider"}}
    on_device = model if device == "cpu" else copy.deepcopy(model).to(device)
    program = formats.export_pt2(on_device, [t.to(device) for t in example], path, dynamic, device)
    ranges = shapes.exported_ranges(program, [s.name for s in inputs])
    return {
        formats.settings_key("pt2", device): {
            "torch_export": "non-strict",
            "aoti_compile_and_package": True,
            "device": device,
            "dynamic_ranges": ranges,
        }
    }


def export_registry_model(
    model_name: str,
    repository: str | Path,
    formats_: Sequence[str] = ALL_FORMATS,
    *,
    model_args: dict[str, Any] | None = None,
    init_seed: int = 0,
    **kwargs: Any,
) -> ExportResult:
    """A registry model without a checkpoint: freshly initialised (seeded) and labelled random-init."""
    return export_checkpoint(random_init_checkpoint(model_name, model_args, init_seed), repository, formats_, **kwargs)
