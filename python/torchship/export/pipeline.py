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
import inspect
import json
import logging
import os
import platform
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from torchship import models, tolerance
from torchship.export import calibration as calibration_mod
from torchship.export import formats as formats_mod
from torchship.export import image_graphs, shapes, toolchain, variants
from torchship.export import outputs as outputs_mod
from torchship.export import quantize as quantize_mod
from torchship.export.errors import ExportError, root_cause
from torchship.export.formats import ALL_FORMATS
from torchship.export.shapes import Shape, random_inputs
from torchship.export.source import RANDOM_INIT, Source, from_checkpoint, random_init_checkpoint, weights_digest
from torchship.export.variants import Variant
from torchship.export.verify import (
    VerificationRow,
    degenerate_outputs,
    failure_summary,
    format_table,
    output_specs,
    run_eager,
    verify,
)
from torchship.models.registry import TensorSpec
from torchship.tensors import datatype_of
from torchship.training.checkpoint import build_model, sha256

__all__ = [
    "ALL_FORMATS",
    "ExportError",
    "ExportResult",
    "VerificationRow",
    "export",
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
    source_model: str,
    weights: str,
    inputs: Sequence[TensorSpec],
    outputs_: Sequence[TensorSpec],
    examples: Sequence[Shape],
    max_batch_size: int,
    labels: Sequence[str] | None,
    preprocessing: Mapping[str, Any] | None,
    value_ranges: Mapping[str, tuple[int, int]],
    variants_: Sequence[dict[str, Any]],
    image: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What cpp/src/model_config.cpp parses; ``source_model``, ``weights`` and ``value_range`` are for people
    and for parity (the integer values verification drew from). ``image``: the image graphs' record
    (docs/images.md), None for a model that takes no images."""
    ins = []
    for s, shape in zip(inputs, examples, strict=True):
        entry = {**s.to_dict(), "example_shape": list(shape)}
        if s.name in value_ranges:
            entry["value_range"] = list(value_ranges[s.name])
        ins.append(entry)
    return {
        "name": name,
        "platform": "torchship",
        "source_model": source_model,
        "weights": weights,
        "max_batch_size": max_batch_size,
        "inputs": ins,
        "outputs": [s.to_dict() for s in outputs_],
        "dynamic_batching": {"max_queue_delay_microseconds": 0, "max_queue_size": 128},
        "instance_group": {"count": 1},
        "warmup": {"batch_sizes": sorted({1, max_batch_size})},
        "labels": list(labels) if labels else None,
        "preprocessing": dict(preprocessing or {}),
        "variants": list(variants_),
        "image": dict(image) if image else None,
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
    # mkdir, not mkdtemp: mkdtemp's mode 0700 would be the published version's, and a server running as
    # another user (a container's, a Kubernetes pod's) could not read the model.
    staging = repository / f".{name}-staging-{uuid.uuid4().hex}"
    staging.mkdir()
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


def _targets(formats_: Sequence[str], devices: Sequence[str], extra: Sequence[str]) -> list[Variant]:
    """Variants to export and verify: .pt2 per device (and per requested precision/layout); TorchScript
    checked on each device (the C++ runtime loads model.pt on CUDA too); ONNX on CPU (ONNX Runtime's CPU
    provider)."""
    out = []
    for fmt in formats_:
        for device in devices:
            if fmt == "onnx" and device != "cpu":
                continue
            out.append(Variant(fmt, device))
    for text in extra:
        on = [d for d in devices if d != "cpu"] if text.strip().lower().startswith("fp16") else devices
        try:
            wanted = [variants.parse(text, d) for d in on or ["cpu"]]  # fp16 on the CPU: parse says why not
        except ValueError as e:
            raise ExportError(str(e)) from e
        out += [v for v in wanted if v not in out]
    return out


def _input_names(model: Callable[..., Any], count: int) -> list[str]:
    """The forward signature's positional parameter names; ``input``, ``input_1``... where there are none."""
    try:
        params = list(inspect.signature(model).parameters.values())
    except (TypeError, ValueError):
        params = []
    named = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(named) >= count:
        return named[:count]
    return ["input" if i == 0 else f"input_{i}" for i in range(count)]


def _program_inputs(program: torch.export.ExportedProgram) -> tuple[list[str], dict[str, list[int]]]:
    """An ExportedProgram's user input names and, per input, the non-batch dimensions it holds symbolic."""
    user = [
        s for s in program.graph_signature.input_specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT
    ]
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    names, dynamic = [], {}
    for spec in user:
        name = getattr(spec.arg, "name", str(spec.arg))
        names.append(name)
        val = placeholders[name].meta.get("val") if name in placeholders else None
        dims = [i for i, d in enumerate(getattr(val, "shape", ())) if isinstance(d, torch.SymInt)]
        if 0 not in dims:
            raise ExportError(
                f"the ExportedProgram's input {name!r} has a fixed batch size; export it with "
                "dynamic_shapes={..., 0: torch.export.Dim('batch', max=...)} so requests can be batched"
            )
        dynamic[name] = [d for d in dims if d != 0]
    return names, dynamic


def _input_specs(
    examples: Sequence[torch.Tensor],
    names: Sequence[str],
    dynamic: Mapping[str, Sequence[int]],
) -> list[TensorSpec]:
    unknown = set(dynamic) - set(names)
    if unknown:
        raise ExportError(f"dynamic dimensions for unknown input(s) {sorted(unknown)}; inputs: {list(names)}")
    specs = []
    for name, t in zip(names, examples, strict=True):
        if t.dim() == 0:
            raise ExportError(f"example input {name!r} is a scalar; every input needs a batch dimension first")
        dims = set(dynamic.get(name, ()))
        bad = [d for d in dims if not 0 < d < t.dim()]
        if bad:
            raise ExportError(f"input {name!r} has {t.dim()} dimensions; dynamic dimension(s) {bad} do not exist")
        shape = (-1, *(-1 if i in dims else d for i, d in enumerate(t.shape) if i > 0))
        specs.append(TensorSpec(name, shape, datatype_of(t.dtype)))
    return specs


def export(
    model: torch.nn.Module | torch.export.ExportedProgram,
    example_inputs: torch.Tensor | Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
    *,
    name: str,
    repository: str | Path,
    max_batch_size: int,
    inputs: Sequence[str] | Sequence[TensorSpec] | None = None,
    outputs: Sequence[str] | Sequence[TensorSpec] | None = None,
    dynamic: Mapping[str, Sequence[int]] | None = None,
    labels: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    formats: Sequence[str] = ALL_FORMATS,
    devices: Sequence[str] = ("cpu",),
    variants: Sequence[str] = (),
    version: int | None = None,
    seed: int = 1234,
    torchscript: str = "trace",
    verify_shapes: Mapping[str, Sequence[Sequence[int]]] | None = None,
    value_ranges: Mapping[str, tuple[int, int]] | None = None,
    allow_degenerate: Sequence[str] = (),
    weights: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    quantize: str | None = None,
    calibration: str | calibration_mod.Calibration | None = None,
) -> ExportResult:
    """Export any model: verified artifacts, config.json and manifest.json in ``repository/name/version``.

    ``example_inputs`` (a tensor, a sequence, or a dict by input name; any batch
    size) give each input's dtype and shape, and for integer inputs the range of
    values verification draws from ([min, max] of the example unless
    ``value_ranges`` says). Input names come from ``inputs``, the dict's keys or
    the forward signature; dimension 0 is the batch (up to ``max_batch_size``)
    and ``dynamic`` lists further dynamic dimensions per input
    (``{"image": [2, 3]}``). Output names come from ``outputs`` or from the
    output structure (``torchship.export.outputs``). ``variants`` adds compiled
    ``.pt2`` variants such as ``"bf16-cl"`` (docs/variants.md). ``quantize="int8"`` adds int8 TorchScript
    and ``.pt2`` variants calibrated on ``calibration`` (docs/quantization.md).

    Every artifact is reloaded in its own runtime and compared with eager
    PyTorch on fresh random inputs; an output that cannot be served, a
    degenerate reference (unless its name is in ``allow_degenerate``) or any
    comparison outside the tolerance policy raises ExportError and writes nothing.
    Image ``preprocessing`` also becomes verified TorchScript graphs beside the
    artifacts (``preprocess.pt``, config.json's ``image``: docs/images.md).
    """
    formats_ = list(dict.fromkeys(formats))
    devices = list(dict.fromkeys(devices))
    _check_request(formats_, devices)
    if not _NAME.fullmatch(name):
        raise ExportError(f"model name {name!r} is not a valid repository name (letters, digits, '_', '.', '-')")
    if max_batch_size < 1:
        raise ExportError(f"max_batch_size must be >= 1, not {max_batch_size}")
    targets = _targets(formats_, devices, variants)
    if quantize not in (None, quantize_mod.PRECISION):
        raise ExportError(f"quantize={quantize!r}: the quantized precision made at export is 'int8'")
    if quantize:
        targets += quantize_mod.targets(formats_, devices)

    dynamic = dict(dynamic or {})
    if isinstance(model, torch.export.ExportedProgram):
        program_names, program_dynamic = _program_inputs(model)
        dynamic = dynamic or program_dynamic
        model = model.module()
        default_names = program_names
        from_program = True
    else:
        default_names, from_program = None, False
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = [example_inputs]
    if isinstance(example_inputs, Mapping):
        default_names = list(example_inputs)
        example_inputs = list(example_inputs.values())
    examples_given = [t.detach().cpu() for t in example_inputs]
    if inputs and isinstance(inputs[0], TensorSpec):
        specs = list(inputs)  # type: ignore[arg-type]
    else:
        names = list(inputs or default_names or _input_names(model.forward, len(examples_given)))  # type: ignore[arg-type]
        if len(names) != len(examples_given):
            raise ExportError(f"model {name!r}: {len(names)} input names ({names}) for {len(examples_given)} examples")
        specs = _input_specs(examples_given, names, dynamic)
    examples = [(1, *t.shape[1:]) for t in examples_given]
    try:
        examples = [shapes.check_against_spec(s, x, "example shape") for s, x in zip(specs, examples, strict=True)]
        extra = shapes.extra_verification_shapes(specs, examples, verify_shapes)
    except ValueError as e:
        raise ExportError(f"model {name!r}: {e}") from e
    ranges = {s.name: r for s, t in zip(specs, examples_given, strict=True) if (r := shapes.observed_range(t))}
    ranges.update(value_ranges or {})
    unknown = set(allow_degenerate)
    int8_data = None
    if quantize:
        try:
            int8_data = (
                calibration
                if isinstance(calibration, calibration_mod.Calibration)
                else calibration_mod.load(calibration, specs, examples, preprocessing, seed=seed)
            )
        except ValueError as e:
            raise ExportError(f"model {name!r}: {e}") from e
        if weights and weights.startswith(RANDOM_INIT) and quantize_mod.calibrate_batchnorm(model, int8_data):
            weights = f"{weights}, BatchNorm statistics from {int8_data.source}"

    if from_program:  # its graph is fixed already; the flag tells exporters so (the module refuses eval())
        for m in model.modules():
            m.training = False
    else:
        model.eval()
    for p in model.parameters():
        p.requires_grad_(False)  # the book's advice: a no_grad block does not make a traced model gradient-free
    eager = run_eager(model, name, specs, examples, extra, max_batch_size, seed, ranges)
    out_specs, cases = output_specs(eager, name, outputs)
    degenerate = degenerate_outputs(eager, out_specs)
    unknown -= {s.name for s in out_specs}
    if unknown:
        raise ExportError(f"allow_degenerate names unknown output(s) {sorted(unknown)}; outputs: {_names(out_specs)}")
    refused = {k: v for k, v in degenerate.items() if k not in allow_degenerate}
    if refused:
        raise ExportError(
            f"model {name!r}: the eager reference is degenerate, so verification could not tell a right artifact "
            "from a wrong one: "
            + "; ".join(f"output '{k}' is {v}" for k, v in refused.items())
            + ". Give the model weights that make its outputs depend on its inputs (docs/tolerance.md), "
            "or accept it with allow_degenerate / --allow-degenerate OUTPUT"
        )
    for k, v in degenerate.items():
        log.warning("%s: output '%s' is %s: its verification proves little (allowed)", name, k, v)

    # Artifacts return a flat tuple in the documented order, whatever the model's structure.
    probe = eager.runs[0][1]
    export_model = model if outputs_mod.is_flat(probe) else outputs_mod.flat_outputs(model, _names(specs))
    batch = shapes.example_batch(max_batch_size)
    example = random_inputs(specs, examples, batch=batch, seed=seed - 1, value_ranges=ranges)
    dynamic_shapes = shapes.dynamic_shapes(specs, max_batch_size)
    registry_name = (metadata or {}).get("registry_model") or name
    int8 = quantize_mod.Int8Check.build(export_model, registry_name, int8_data, max_batch_size) if int8_data else None

    repository = Path(repository)
    model_dir = repository / name
    version = version or _next_version(model_dir)
    if version < 1:
        raise ExportError(f"version must be >= 1, not {version}")
    version_dir = model_dir / str(version)
    if version_dir.exists():
        raise ExportError(f"{version_dir} already exists; pick another --version")
    weights = weights or f"in-memory module {type(model).__name__} (weights sha256 {_digest(model)[:12]})"

    log.info(
        "%s: exporting %s (%s) from %s", name, ", ".join(v.settings_key for v in targets), ", ".join(devices), weights
    )
    rows: list[VerificationRow] = []
    by_variant: dict[Variant, list[VerificationRow]] = {}
    seconds: dict[str, float] = {}
    settings: dict[str, Any] = {}
    artifacts: list[dict[str, Any]] = []
    with _staging(repository, name) as staging, toolchain.strict_fp32():
        for variant in targets:
            fmt, device = variant.format, variant.device
            path = staging / variant.file
            key = formats_mod.settings_key(fmt, device) if not variant.converted else variant.settings_key
            started = time.perf_counter()
            try:
                if not path.exists():  # TorchScript is written once and checked on every device
                    settings.update(
                        quantize_mod.write(
                            variant,
                            export_model,
                            int8.calibration,
                            path,
                            _dynamic_for(export_model, dynamic_shapes),
                            max_batch_size,
                        )
                        if int8 and variant.precision == quantize_mod.PRECISION
                        else _write(variant, export_model, example, path, specs, out_specs, dynamic_shapes, torchscript)
                    )
                    artifact = {
                        "file": variant.file,
                        "format": fmt,
                        "bytes": path.stat().st_size,
                        "sha256": sha256(path),
                    }
                    if fmt == "pt2":
                        artifact["device"] = device
                    if variant.converted:
                        artifact |= {"precision": variant.precision, "layout": variant.layout}
                    artifacts.append(artifact)
                runner = formats_mod.LOADERS[fmt](path, device)
            except Exception as e:
                raise ExportError(f"model {name!r}: {key} export for {device} failed: {root_cause(e)}") from e
            exported = time.perf_counter()
            if int8 and variant.precision == quantize_mod.PRECISION:
                new_rows = int8.verify(variant, runner, out_specs)  # held-out data; agreement and accuracy too
            else:
                atol = tolerance.variant_tolerance(fmt, device, variant.precision) if variant.converted else None
                new_rows = verify(runner, fmt if not variant.converted else key, device, cases, out_specs, name, atol)
            rows += new_rows
            record = dataclasses.replace(variant, device="cpu") if fmt == "torchscript" else variant
            by_variant.setdefault(record, []).extend(new_rows)
            seconds[key] = round(exported - started, 3)
            seconds[f"{key} verify"] = round(time.perf_counter() - exported, 3)
            worst = max((r.max_abs for r in new_rows), default=0.0)
            log.info(
                "%s: %-11s %-4s exported in %6.1f s, verified in %5.1f s (%d comparisons, max abs %.2g)%s",
                name,
                key,
                device,
                seconds[key],
                seconds[f"{key} verify"],
                len(new_rows),
                worst,
                "" if all(r.ok for r in new_rows) else "  FAIL",
            )
        if not all(r.ok for r in rows):
            raise ExportError(failure_summary(name, rows))
        image = image_graphs.write(staging, name, specs, out_specs, labels, preprocessing)

        variant_records = [v.record(r) for v, r in by_variant.items()]
        manifest = {
            "model": name,
            "version": version,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **(metadata or {}),
            "weights": weights,
            "weights_sha256": _digest(model),
            "versions": _versions(),
            "export": {
                "formats": formats_,
                "devices": devices,
                "variants": list(variants),
                "max_batch_size": max_batch_size,
                "inputs": [s.to_dict() for s in specs],
                "outputs": [s.to_dict() for s in out_specs],
                "output_structure": "flat" if export_model is model else "flattened by torchship.export.outputs",
                "dynamic_shapes": shapes.describe_dynamic_shapes(specs, max_batch_size),
                "example_shapes": {s.name: list(x) for s, x in zip(specs, examples, strict=True)},
                "value_ranges": {k: list(v) for k, v in ranges.items()},
                "verification_shapes": [{s.name: list(x) for s, x in zip(specs, xs, strict=True)} for xs in extra],
                "verification_batch_sizes": sorted({c.batch_size for c in cases}),
                "seed": seed,
                **settings,
                "seconds": seconds,
            },
            "artifacts": artifacts,
            "variants": variant_records,
            "tolerance": {"reference": "eager PyTorch, CPU, fp32", "policy": "docs/tolerance.md"},
            "degenerate_outputs": degenerate,
            **({"quantization": int8.manifest()} if int8 else {}),
            "verification": [dataclasses.asdict(r) | {"bound": r.bound, "ok": r.ok} for r in rows],
            "image": image.manifest,
        }
        _write_json(staging / "manifest.json", manifest)
        model_dir.mkdir(parents=True, exist_ok=True)
        staging.rename(version_dir)
    source_model = (metadata or {}).get("registry_model") or f"{type(model).__module__}.{type(model).__qualname__}"
    config = _config(
        name,
        source_model,
        weights,
        specs,
        out_specs,
        examples,
        max_batch_size,
        labels,
        preprocessing,
        ranges,
        variant_records,
        image.record,
    )
    _write_json(model_dir / "config.json", config)
    log.info("%s: version %d -> %s", name, version, version_dir)
    return ExportResult(name, version, version_dir, rows, weights, seconds)


def _names(specs: Sequence[TensorSpec]) -> list[str]:
    return [s.name for s in specs]


def _digest(model: torch.nn.Module) -> str:
    return weights_digest(dict(model.state_dict()))


def _dynamic_for(module: torch.nn.Module, dynamic: tuple[dict[int, Any], ...]) -> Any:
    """torch.export matches ``dynamic_shapes`` to forward's parameters: a ``*inputs`` wrapper takes them as one."""
    params = inspect.signature(module.forward).parameters.values()
    star = [p.name for p in params if p.kind == p.VAR_POSITIONAL]
    return {star[0]: dynamic} if star else dynamic


def _write(
    variant: Variant,
    model: torch.nn.Module,
    example: Sequence[torch.Tensor],
    path: Path,
    inputs: Sequence[TensorSpec],
    outputs_: Sequence[TensorSpec],
    dynamic: tuple[dict[int, Any], ...],
    method: str,
) -> dict[str, Any]:
    """Writes one artifact; returns the settings the manifest records for it."""
    fmt, device = variant.format, variant.device
    if fmt == "torchscript":
        tracer_warnings = formats_mod.export_torchscript(model, example, path, method)
        return {"torchscript": {"method": method, "tracer_warnings_inside_torch": tracer_warnings}}
    if fmt == "onnx":
        used = formats_mod.export_onnx(
            model, example, path, _names(inputs), _names(outputs_), _dynamic_for(model, dynamic)
        )
        return {"onnx": used | {"runtime": "onnxruntime CPUExecutionProvider"}}
    if variant.converted:
        on_device = variants.convert(model, variant, [s.dtype for s in outputs_])
    else:
        on_device = model if device == "cpu" else copy.deepcopy(model).to(device)
    program = formats_mod.export_pt2(
        on_device, [t.to(device) for t in example], path, _dynamic_for(on_device, dynamic), device
    )
    ranges = shapes.exported_ranges(program, _names(inputs))
    key = variant.settings_key if variant.converted else formats_mod.settings_key("pt2", device)
    extra = {"precision": variant.precision, "layout": variant.layout} if variant.converted else {}
    return {
        key: {
            "torch_export": "non-strict",
            "aoti_compile_and_package": True,
            "device": device,
            "dynamic_ranges": ranges,
            **extra,
        }
    }


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
    variants: Sequence[str] = (),
    allow_degenerate: Sequence[str] = (),
    quantize: str | None = None,
    calibration: str | None = None,
) -> ExportResult:
    """Export one checkpoint (a file, an in-memory dict, or a resolved Source) into ``repository``,
    through ``export`` with the interface the checkpoint declares.

    ``example_shapes`` overrides the registry's example (batch included, as
    ``{"image": (1, 3, 64, 64)}``) where the spec has dynamic dims; ``verify_shapes``
    lists further shapes verification must pass at (default for dynamic H/W:
    each dynamic size doubled). ``seed`` drives the example and verification inputs.
    """
    source = checkpoint if isinstance(checkpoint, Source) else from_checkpoint(checkpoint)
    ckpt = source.checkpoint
    entry = models.get(ckpt["model"])
    name = name or ckpt["model"]
    inputs = [TensorSpec.from_dict(d) for d in ckpt["inputs"]]
    outputs_ = [TensorSpec.from_dict(d) for d in ckpt["outputs"]]
    try:
        examples = shapes.example_shapes(entry, inputs, ckpt.get("example_shapes", {}), example_shapes)
    except ValueError as e:
        raise ExportError(f"model {name!r}: {e}") from e
    example = random_inputs(inputs, examples, batch=1, seed=seed - 1)
    data = None
    if quantize:  # the checkpoint's own data set is a calibration source only here
        try:
            data = calibration_mod.load(calibration, inputs, examples, ckpt.get("preprocessing"), ckpt, seed)
        except ValueError as e:
            raise ExportError(f"model {name!r}: {e}") from e
    metadata = {
        "registry_model": ckpt["model"],
        "description": entry.description,
        "model_args": ckpt["model_args"],
        "source_checkpoint": source.manifest(),
        "metrics": ckpt.get("metrics", {}),
        "training": ckpt.get("training", {}),
    }
    return export(
        build_model(ckpt),
        example,
        name=name,
        repository=repository,
        max_batch_size=max_batch_size or entry.max_batch_size,
        inputs=inputs,
        outputs=outputs_,
        labels=ckpt.get("labels"),
        preprocessing=ckpt.get("preprocessing", {}),
        formats=formats_,
        devices=devices,
        variants=variants,
        version=version,
        seed=seed,
        torchscript=torchscript_method or entry.torchscript,
        verify_shapes=verify_shapes,
        allow_degenerate=allow_degenerate,
        weights=source.weights,
        metadata=metadata,
        quantize=quantize,
        calibration=data,
    )


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
