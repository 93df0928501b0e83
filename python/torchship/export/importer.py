"""``torchship import FILE.pt|.onnx|.pt2 --name N``: adopt an artifact made elsewhere.

There is no eager model to compare with, so verification is what can be
checked without one: the artifact runs at its declared shapes (batch 1, 3 and
max) in every runtime that can load it, its outputs must be batched and not
degenerate, and independent runtimes are compared with each other:

    .pt   TorchScript in Python (the reference) and the C++ runtime (the same
          interpreter: SAME_ARTIFACT_TOL), and ONNX Runtime on an ONNX export of
          it where one can be made (independent kernels: the ONNX bound)
    .onnx ONNX Runtime only. The C++ runtime and the server do not run ONNX: an
          imported ONNX file serves only where ONNX Runtime does (Python, parity)
    .pt2  the AOTInductor loader in Python (the reference) and the C++ runtime
          (the same compiled kernels: SAME_ARTIFACT_TOL)

config.json comes from the artifact's own signature where it has one (the
TorchScript forward schema's argument names, the ONNX graph's names, dtypes and
dim names) and from flags for the rest; manifest.json says there was no eager
reference and lists every check that ran or could not.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from torchship import tolerance
from torchship.export import formats, image_graphs, shapes, toolchain
from torchship.export import outputs as outputs_mod
from torchship.export.errors import ExportError, root_cause
from torchship.export.pipeline import _NAME, _config, _next_version, _staging, _versions, _write_json
from torchship.export.shapes import Shape
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
from torchship.training.checkpoint import sha256

log = logging.getLogger("torchship.export")
SUFFIXES = {".pt": "torchscript", ".pth": "torchscript", ".onnx": "onnx", ".pt2": "pt2"}
_ONNX_DTYPES = {1: "FP32", 2: "UINT8", 3: "INT8", 5: "INT16", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16", 11: "FP64"}


def signature(path: Path, fmt: str) -> list[TensorSpec | str]:
    """What the artifact says about its inputs: ONNX full specs (names, dtypes, -1 for named or unknown
    dims), TorchScript the forward schema's argument names, .pt2 nothing."""
    if fmt == "onnx":
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        initializers = {i.name for i in graph.initializer}
        specs: list[TensorSpec | str] = []
        for i in graph.input:
            if i.name in initializers:
                continue
            t = i.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
            specs.append(TensorSpec(i.name, dims, _ONNX_DTYPES.get(t.elem_type, f"onnx type {t.elem_type}")))
        return specs
    if fmt == "torchscript":
        module = formats.jit_load(path)
        return [a.name for a in module.forward.schema.arguments[1:]]  # [0] is self
    return []


def _onnx_output_names(path: Path, fmt: str) -> list[str] | None:
    if fmt != "onnx":
        return None
    import onnx

    return [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]


def _specs(
    declared: Sequence[TensorSpec | str], given: Mapping[str, tuple[Shape, str]], path: Path
) -> tuple[list[TensorSpec], list[Shape]]:
    """Input specs and example shapes: the artifact's names and what it fixes, flags for the rest."""
    names = [d.name if isinstance(d, TensorSpec) else d for d in declared] or list(given)
    unknown = set(given) - set(names)
    if unknown:
        raise ExportError(f"{path.name}: --input for unknown input(s) {sorted(unknown)}; the artifact takes {names}")
    specs, examples = [], []
    for d, name in zip(declared or names, names, strict=True):
        shape, dtype = given.get(name, ((), ""))
        own = d if isinstance(d, TensorSpec) else None
        if own is not None and own.shape and own.shape[0] != -1:
            raise ExportError(
                f"{path.name}: input '{name}' has a fixed batch size {own.shape[0]}; re-export it with a dynamic "
                "first dimension (dynamic_shapes / dynamic_axes) so requests can be batched"
            )
        if not shape:
            if own is None or any(s == -1 for s in own.shape[1:]):
                what = f"its shape {list(own.shape)} has unnamed sizes" if own else "the artifact does not say"
                raise ExportError(f"{path.name}: input '{name}': {what}; give --input {name}=1xCxHxW[:DTYPE]")
            shape = (1, *own.shape[1:])
        if own is not None:
            problem = own.shape_problem(shape)
            if problem:
                raise ExportError(f"{path.name}: --input {name}={shapes.format_shape(shape)} {problem}")
        spec_dtype = own.dtype if own else (dtype or "FP32")
        if dtype and dtype != spec_dtype:
            raise ExportError(f"{path.name}: input '{name}' is {spec_dtype} in the artifact, not {dtype}")
        spec_shape = own.shape if own else (-1, *shape[1:])
        specs.append(TensorSpec(name, tuple(spec_shape), spec_dtype))
        examples.append(tuple(shape))
    return specs, examples


def _flat_torchscript(
    path: Path, specs: Sequence[TensorSpec], example: tuple[torch.Tensor, ...]
) -> torch.jit.ScriptModule:
    """The TorchScript file with its outputs flattened (the C++ runtime and the ONNX exporter take tensors and
    tuples only): a trace of ``FlatOutputs`` around the loaded module, which keeps it as one call, its own
    code unchanged; the trace adds only the fixed indexing of its dict or nested output."""
    with formats.torchscript_deprecation_noted():
        loaded = formats.jit_load(path)
        flat = outputs_mod.flat_outputs(loaded, [s.name for s in specs])
        return torch.jit.trace(flat, example, check_trace=False)


def _onnx_cross_check(
    module: torch.jit.ScriptModule, staging: Path, specs: Sequence[TensorSpec], example: tuple[torch.Tensor, ...]
) -> Path:
    """An ONNX export of the (flattened) TorchScript module, for a runtime with kernels of its own: the
    TorchScript-based exporter (``dynamo=False``), since the dynamo exporter does not take ScriptModules."""
    out = staging / "cross_check.onnx"
    dynamic = {s.name: {i: f"{s.name}_{i}" for i, d in enumerate(s.shape) if d == -1} for s in specs}
    with formats.torchscript_deprecation_noted(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the old exporter's deprecation notice: this file is a check only
        torch.onnx.export(
            module, example, str(out), input_names=[s.name for s in specs], dynamic_axes=dynamic,
            opset_version=formats.ONNX_OPSET, dynamo=False,
        )  # fmt: skip
    return out


def import_artifact(
    path: str | Path,
    repository: str | Path,
    *,
    name: str,
    inputs: Mapping[str, tuple[Shape, str]] | None = None,
    outputs: Sequence[str] | None = None,
    max_batch_size: int = 8,
    value_ranges: Mapping[str, tuple[int, int]] | None = None,
    allow_degenerate: Sequence[str] = (),
    labels: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    seed: int = 1234,
) -> tuple[Path, list[VerificationRow], list[dict[str, Any]]]:
    """Copy ``path`` into ``repository/name/version`` with config.json and a manifest of the checks that ran.

    ``labels`` and ``preprocessing`` are declared as for ``export``: image preprocessing becomes the
    verified image graphs beside the file (docs/images.md).

    Returns the version directory, the comparison rows and the checks."""
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None or not path.is_file():
        raise ExportError(f"{path}: not a file ending in {', '.join(SUFFIXES)}")
    if not _NAME.fullmatch(name):
        raise ExportError(f"model name {name!r} is not a valid repository name (letters, digits, '_', '.', '-')")
    specs, examples = _specs(signature(path, fmt), dict(inputs or {}), path)
    ranges = dict(value_ranges or {})
    variant = Variant(fmt, "cpu")
    reference = formats.LOADERS[fmt](path, "cpu")
    label = {"torchscript": "TorchScript (Python)", "onnx": "ONNX Runtime", "pt2": "AOTInductor loader (Python)"}
    checks: list[dict[str, Any]] = []

    def raw(*x: torch.Tensor) -> Any:
        if fmt == "torchscript":  # the module's own output structure: dict keys become names
            with formats.torchscript_deprecation_noted():
                return module(*x)
        return reference(*x)

    if fmt == "torchscript":
        module = formats.jit_load(path).eval()
    extra = shapes.extra_verification_shapes(specs, examples, None)
    eager = run_eager(raw, name, specs, examples, extra, max_batch_size, seed, ranges)  # type: ignore[arg-type]
    out_specs, cases = output_specs(eager, name, outputs or _onnx_output_names(path, fmt))
    degenerate = degenerate_outputs(eager, out_specs)
    refused = {k: v for k, v in degenerate.items() if k not in allow_degenerate}
    if refused:
        raise ExportError(
            f"{path.name}: its outputs are degenerate, so no check could tell a right result from a wrong one: "
            + "; ".join(f"output '{k}' is {v}" for k, v in refused.items())
            + " (--allow-degenerate OUTPUT accepts it)"
        )
    batches = sorted({c.batch_size for c in cases})
    checks.append({"check": f"ran in {label[fmt]} at batch sizes {batches}", "ok": True})

    repository = Path(repository)
    model_dir = repository / name
    version = _next_version(model_dir)
    rows: list[VerificationRow] = []
    with _staging(repository, name) as staging:
        repo = staging / "repository"
        (repo / name / "1").mkdir(parents=True)
        # The inputs both traces take: the TorchScript flattening and its ONNX cross-check.
        example = tuple(shapes.random_inputs(specs, examples, shapes.example_batch(max_batch_size), seed=0))
        flat = _flat_torchscript(path, specs, example) if fmt == "torchscript" else None
        wrapped = flat is not None and not outputs_mod.is_flat(eager.runs[0][1])
        if wrapped:
            flat.save(str(repo / name / "1" / variant.file))  # type: ignore[union-attr]
            checks.append({"check": "outputs flattened for serving: model.pt is the file inside a flattening trace "
                           "(torchship.export.outputs)", "ok": True})  # fmt: skip
        else:
            _copy(path, fmt, repo / name / "1" / variant.file)
        weights = f"imported {path.name} (sha256 {sha256(path)[:12]})"
        image = image_graphs.write(repo / name / "1", name, specs, out_specs, labels, preprocessing)
        config = _config(
            name,
            f"imported {path.name}",
            weights,
            specs,
            out_specs,
            examples,
            max_batch_size,
            labels,
            preprocessing,
            ranges,
            [variant.record([])],
            image.record,
        )
        _write_json(repo / name / "config.json", config)
        if fmt == "torchscript":
            try:
                onnx_path = _onnx_cross_check(flat, staging, specs, example)  # type: ignore[arg-type]
                new = verify(formats.load_onnx(onnx_path), "onnx", "cpu", cases, out_specs, name)
                rows += new
                checks.append(_check("ONNX Runtime on an ONNX export of it (independent kernels)", new))
            except ExportError:
                raise
            except Exception as e:
                checks.append({"check": "ONNX Runtime on an ONNX export of it", "ok": None, "why_not": root_cause(e)})
        if fmt in ("torchscript", "pt2"):
            rows += _native(repo, name, fmt, cases, out_specs, checks)
        else:
            checks.append({"check": "C++ runtime / torchship-server", "ok": None, "why_not": "they do not run ONNX"})
        if rows and not all(r.ok for r in rows):
            raise ExportError(failure_summary(name, rows))
        checks.append({"check": "outputs batched, of fixed size and not degenerate", "ok": True})
        manifest = {
            "model": name,
            "version": version,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "imported": {"file": str(path), "format": fmt, "sha256": sha256(path)},
            "eager_reference": None,
            "reference": f"none: no eager model; {label[fmt]} ran the artifact and the other runtimes were "
            "compared with it",
            "checks": checks,
            "degenerate_outputs": degenerate,
            "versions": _versions(),
            "export": {"max_batch_size": max_batch_size, "inputs": [s.to_dict() for s in specs], "seed": seed},
            "variants": [variant.record(rows)] if rows else [variant.record([])],
            "verification": [r.__dict__ | {"bound": r.bound, "ok": r.ok} for r in rows],
            "image": image.manifest,
        }
        version_dir = staging / "version"
        (repo / name / "1").rename(version_dir)
        _write_json(version_dir / "manifest.json", manifest)
        model_dir.mkdir(parents=True, exist_ok=True)
        version_dir.rename(model_dir / str(version))
        config["variants"] = manifest["variants"]
    _write_json(model_dir / "config.json", config)
    log.info("%s: imported %s as version %d", name, path.name, version)
    return model_dir / str(version), rows, checks


def _copy(path: Path, fmt: str, target: Path) -> None:
    """The file into the version; an ONNX file's external weights (``X.onnx.data``, which torch.onnx.export
    writes beside it) folded in, so the version holds one self-contained file."""
    if fmt != "onnx":
        shutil.copyfile(path, target)
        return
    import onnx

    onnx.save_model(onnx.load(str(path), load_external_data=True), str(target), save_as_external_data=False)


def _check(what: str, rows: Sequence[VerificationRow]) -> dict[str, Any]:
    worst = max(rows, key=lambda r: r.max_abs / r.bound if r.bound else float("inf"))
    return {"check": what, "ok": all(r.ok for r in rows), "max_abs": worst.max_abs, "bound": worst.bound}


def _native(
    repo: Path, name: str, fmt: str, cases: Sequence[Any], out_specs: Sequence[TensorSpec], checks: list[dict]
) -> list[VerificationRow]:
    """The C++ runtime on the same file: the same interpreter or kernels, so the same-artifact bound."""
    try:
        from torchship.runtime import Runtime
    except ImportError as e:
        checks.append({"check": "C++ runtime", "ok": None, "why_not": f"torchship._C is not built: {e}"})
        return []
    with toolchain.strict_fp32(), Runtime(repo, device="cpu", format=fmt, models=[name]) as rt:
        model = rt.model(name)
        run = lambda *x: formats.as_tuple(model.infer(list(x)))  # noqa: E731
        rows = verify(run, f"native-{fmt}", "cpu", cases, out_specs, name, tolerance.SAME_ARTIFACT_TOL)
    checks.append(_check("C++ runtime (torchship._C), the same file", rows))
    return rows


def _parse_inputs(items: Sequence[str] | None) -> dict[str, tuple[Shape, str]]:
    """``["image=1x3x32x32", "tokens=1x16:INT64"]`` -> ``{"image": ((1, 3, 32, 32), ""), ...}``."""
    out = {}
    for item in items or []:
        name, sep, rest = item.partition("=")
        if not sep or not name:
            raise ValueError(f"bad --input {item!r}: expected NAME=1xCxHxW[:DTYPE], e.g. image=1x3x224x224")
        shape, _, dtype = rest.partition(":")
        out[name.strip()] = (shapes.parse_shape(shape), dtype.strip().upper())
    return out


def _parse_ranges(items: Sequence[str] | None) -> dict[str, tuple[int, int]]:
    out = {}
    for item in items or []:
        name, sep, rest = item.partition("=")
        low, colon, high = rest.partition(":")
        if not sep or not colon:
            raise ValueError(f"bad --value-range {item!r}: expected NAME=LOW:HIGH, e.g. tokens=0:999")
        out[name.strip()] = (int(low), int(high))
    return out


def _read_labels(path: Path | None) -> list[str] | None:
    """One class name a line, in index order (ImageNet's imagenet_classes.txt)."""
    if path is None:
        return None
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_preprocessing(text: str | None) -> dict[str, Any] | None:
    """``--preprocessing``: JSON text, or a file holding it."""
    if text is None:
        return None
    path = Path(text)
    looks_like_json = text.lstrip()[:1] in ("{", "[")
    if not looks_like_json and not path.is_file():
        raise ValueError(f"--preprocessing {text!r}: neither a JSON object nor a file")
    source = text if looks_like_json else path.read_text(encoding="utf-8")
    try:
        value = json.loads(source)
    except json.JSONDecodeError as e:
        raise ValueError(f"--preprocessing: not JSON ({e}): {text[:80]!r}") from e
    if not isinstance(value, dict):
        raise ValueError(f"--preprocessing: expected a JSON object, got {type(value).__name__}")
    return value


def _run(args: argparse.Namespace) -> int:
    directory, rows, checks = import_artifact(
        args.file,
        args.repository,
        name=args.name,
        inputs=_parse_inputs(args.input),
        outputs=[o for o in (args.outputs or "").split(",") if o] or None,
        max_batch_size=args.max_batch_size,
        value_ranges=_parse_ranges(args.value_range),
        allow_degenerate=args.allow_degenerate or (),
        labels=_read_labels(args.labels),
        preprocessing=_read_preprocessing(args.preprocessing),
    )
    if rows:
        print(format_table(rows))
    for c in checks:
        verdict = {True: "ok", False: "FAIL", None: "not run"}[c["ok"]]
        print(f"{verdict:>7}  {c['check']}" + (f" ({c['why_not']})" if c.get("why_not") else ""))
    print(f"imported {args.file} as {args.name} -> {directory} (no eager reference: see manifest.json 'checks')")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="adopt a TorchScript, ONNX or .pt2 file made elsewhere into a model repository",
        description="Copy FILE into the repository with a config.json taken from its own signature where it has "
        "one (TorchScript argument names; ONNX names, dtypes and dims) and from --input for the rest. With no "
        "eager model to compare with, the file is run at its declared shapes in every runtime that loads it and "
        "independent runtimes are compared with each other; manifest.json lists the checks. ONNX files serve "
        "only in ONNX Runtime (Python): the C++ server does not run ONNX.",
    )
    p.add_argument("file", type=Path, help="FILE.pt (torch.jit.save), FILE.onnx or FILE.pt2 (AOTInductor package)")
    p.add_argument("--name", required=True, help="model name in the repository")
    p.add_argument("--repository", type=Path, default=Path("model_repository"), help="default %(default)s")
    p.add_argument(
        "--input",
        action="append",
        metavar="NAME=1xCxHxW[:DTYPE]",
        help="an input's example shape, batch first (repeatable; DTYPE default FP32); needed where the file does "
        "not fix the shape",
    )
    p.add_argument("--outputs", help="comma-separated output names (default: from the output's structure)")
    p.add_argument("--max-batch-size", type=int, default=8, help="default %(default)s")
    p.add_argument("--value-range", action="append", metavar="NAME=LOW:HIGH", help="integer input values to draw")
    p.add_argument("--allow-degenerate", action="append", metavar="OUTPUT", help="accept a degenerate output")
    p.add_argument("--labels", type=Path, metavar="FILE", help="class names, one a line in index order")
    p.add_argument(
        "--preprocessing",
        metavar="JSON|FILE",
        help='the image preprocessing the model was trained with, as a registry entry declares it, e.g. \'{"resize": '
        '256, "center_crop": 224, "normalize": {"mean": [...], "std": [...]}}\': export makes it the verified '
        "preprocess.pt the server's image route runs (docs/images.md)",
    )
    p.set_defaults(func=_run)
