"""The artifact formats: how each is written, and how each is loaded back in
its own runtime for verification (TorchScript in Python, ONNX Runtime,
the AOTInductor loader). A loaded artifact is a ``Runner``: CPU tensors in,
CPU tensors out, whatever device it runs on."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from torchship.export import outputs, toolchain

log = logging.getLogger("torchship.export")

Runner = Callable[..., tuple[torch.Tensor, ...]]
ONNX_OPSET = 18
ALL_FORMATS = ("torchscript", "onnx", "pt2")
ARTIFACT_NAMES = {"torchscript": "model.pt", "onnx": "model.onnx", "pt2": "model.pt2"}
_noted_jit_deprecation = False


def settings_key(fmt: str, device: str = "cpu") -> str:
    """The manifest's key for one artifact's settings: the format, with the device when it is not the CPU."""
    return fmt if device == "cpu" else f"{fmt}.{device}"


def artifact_name(fmt: str, device: str = "cpu") -> str:
    """File name in a version directory; the C++ runtime looks for model.pt2 on CPU, model.cuda.pt2 on CUDA."""
    if fmt == "pt2" and device != "cpu":
        return f"model.{device}.pt2"
    return ARTIFACT_NAMES[fmt]


class TracerWarningError(RuntimeError):
    """torch.jit.trace warned that the trace may not generalise; the artifact would be silently wrong."""


@contextlib.contextmanager
def torchscript_deprecation_noted() -> Iterator[None]:
    """torch 2.14 deprecates torch.jit with a FutureWarning on every call. TorchScript
    is still a format we ship (beside .pt2, its successor), so say so once and
    silence exactly that warning; every other warning (TracerWarning!) stays."""
    global _noted_jit_deprecation
    if not _noted_jit_deprecation:
        log.info(
            "torch.jit is deprecated in torch %s; torchship still exports TorchScript beside .pt2", torch.__version__
        )
        _noted_jit_deprecation = True
    with warnings.catch_warnings():
        # FutureWarning in torch 2.14, DeprecationWarning in 2.11: the same notice.
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, message=r".*torch\.jit.*")
        yield


def as_tuple(out: object) -> tuple[torch.Tensor, ...]:
    """Any output structure, flattened in the documented order (``torchship.export.outputs``)."""
    return outputs.as_flat_tuple(out)


def _to(inputs: Sequence[torch.Tensor], device: str) -> list[torch.Tensor]:
    return [t.to(device) for t in inputs]


def _cpu(outputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return tuple(t.detach().cpu() for t in outputs)


# --- TorchScript ------------------------------------------------------------


def _tracer_warnings(caught: Sequence[warnings.WarningMessage]) -> list[dict[str, Any]]:
    """Distinct TracerWarnings with a count, each marked as raised inside torch's library code or not."""
    torch_dir = Path(torch.__file__).resolve().parent
    seen: dict[tuple[str, int, str], dict[str, Any]] = {}
    for w in caught:
        file = Path(w.filename).resolve()
        # torch/jit itself warns when its trace checker sees the trace disagree with Python: never benign.
        in_torch = file.is_relative_to(torch_dir) and not file.is_relative_to(torch_dir / "jit")
        shown = str(file.relative_to(torch_dir.parent)) if in_torch else str(file)
        message = str(w.message).splitlines()[0]
        key = (shown, w.lineno, message)
        if key not in seen:
            seen[key] = {"file": shown, "line": w.lineno, "message": message, "in_torch": in_torch, "count": 0}
        seen[key]["count"] += 1
    return list(seen.values())


def _trace(model: torch.nn.Module, example: Sequence[torch.Tensor]) -> tuple[torch.jit.ScriptModule, list[dict]]:
    """torch.jit.trace, which must not emit a TracerWarning from the model's own code.

    Each TracerWarning marks a Python value (an int from a size, a bool from a
    tensor) frozen into the graph. In the model's code that is a bug to fix
    (chapter 15 scripts center_crop for this): the export fails. Inside torch it
    is an input check such as InstanceNorm's ``num_features`` test, frozen
    harmlessly: said loudly, recorded in the manifest, and left to verification
    at other batch sizes and shapes to judge.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        module = torch.jit.trace(model, tuple(example))
    tracer = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    for w in caught:
        if not issubclass(w.category, torch.jit.TracerWarning):  # not ours to judge: hand it on
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    found = _tracer_warnings(tracer)
    own = [f for f in found if not f["in_torch"]]
    if own:
        where = "; ".join(f"{Path(f['file']).name}:{f['line']}: {f['message']}" for f in own)
        raise TracerWarningError(
            f"torch.jit.trace emitted TracerWarning(s) from the model's code or its trace checker: {where}. "
            "Make that code traceable "
            "(e.g. chapter 15's scripted center_crop) or export it with torchscript='script'"
        )
    for f in found:
        log.warning(
            "TracerWarning inside torch (%s:%d, %dx): %s; verification at other batch sizes and shapes decides",
            f["file"],
            f["line"],
            f["count"],
            f["message"].split(". ")[0],
        )
    return module, found


def export_torchscript(
    model: torch.nn.Module, example: Sequence[torch.Tensor], path: Path, method: str
) -> list[dict[str, Any]]:
    """Writes ``path``; returns the TracerWarnings raised inside torch (none when scripted)."""
    found: list[dict[str, Any]] = []
    with torchscript_deprecation_noted():
        if method == "script" and isinstance(model, outputs.FlatOutputs):
            # Script the model (its control flow survives as one scripted call), then trace the flattening of
            # its dict/nested output around it: a fixed structure, so tracing it freezes nothing that varies.
            module, found = _trace(type(model)(torch.jit.script(model.model)), example)  # the same named wrapper
        elif method == "script":
            module = torch.jit.script(model)
        elif method == "trace":
            module, found = _trace(model, example)
        else:
            raise ValueError(f"TorchScript method must be 'trace' or 'script', not {method!r}")
        module.save(str(path))
    return found


def jit_load(path: Path, device: str = "cpu") -> torch.jit.ScriptModule:
    """torch.jit.load, with torchvision's operators registered first where torchvision is installed: every
    detection model calls torchvision::nms, unknown to torch until torchvision is imported."""
    if importlib.util.find_spec("torchvision") is not None:
        import torchvision  # noqa: F401  (registers torchvision::* ops)
    with torchscript_deprecation_noted():
        return torch.jit.load(str(path), map_location=device)


def load_torchscript(path: Path, device: str = "cpu") -> Runner:
    module = jit_load(path, device)
    module.eval()

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode(), torchscript_deprecation_noted():
            return _cpu(as_tuple(module(*_to(inputs, device))))

    return run


# --- ONNX -------------------------------------------------------------------


@contextlib.contextmanager
def _onnx_passes_quiet() -> Iterator[None]:
    """The ONNX optimizer logs every pass at INFO ("Removed 36 unused nodes"); keep that for --verbose."""
    loggers = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript")]
    saved = [lg.level for lg in loggers]
    if not log.isEnabledFor(logging.DEBUG):
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)


def export_onnx(
    model: torch.nn.Module,
    example: Sequence[torch.Tensor],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_shapes: Any,
) -> dict[str, Any]:
    """The dynamo exporter with every argument that shapes the file stated, then the full checker.

    Returns those settings as the manifest records them, so it states what was used, not a copy."""
    import onnx

    settings = {"dynamo": True, "opset_version": ONNX_OPSET, "optimize": True, "external_data": False}
    with _onnx_passes_quiet(), warnings.catch_warnings():
        # Several inputs share the one batch Dim; the exporter says it names that axis only once.
        warnings.filterwarnings("ignore", r".*will not be used, since it shares the same shape", UserWarning)
        program = torch.onnx.export(
            model,
            tuple(example),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=dynamic_shapes,
            verify=False,
            report=False,
            verbose=False,
            **settings,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(str(path), load_external_data=False).graph
    got_in, got_out = [i.name for i in graph.input], [o.name for o in graph.output]
    if got_in != list(input_names) or got_out != list(output_names):
        raise RuntimeError(
            f"ONNX graph has inputs {got_in} and outputs {got_out}; the model declares {list(input_names)} "
            f"and {list(output_names)}"
        )
    used = {("opset" if k == "opset_version" else k): v for k, v in settings.items()}  # the manifest's key
    return used | {"checker": "onnx.checker.check_model(full_check=True)"}


def load_onnx(path: Path, device: str = "cpu") -> Runner:
    import onnxruntime as ort

    if device != "cpu":
        raise ValueError("ONNX artifacts are verified with ONNX Runtime's CPU provider only")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(names, inputs, strict=True)}
        return tuple(torch.from_numpy(o) for o in session.run(None, feeds))

    return run


# --- torch.export + AOTInductor (.pt2) ----------------------------------------


def export_pt2(
    model: torch.nn.Module,
    example: Sequence[torch.Tensor],
    path: Path,
    dynamic_shapes: Any,
    device: str = "cpu",
) -> torch.export.ExportedProgram:
    """torch.export (non-strict, dynamic batch) then an AOTInductor package compiled for ``device``.

    ``model`` and ``example`` must already be on ``device``.
    """
    import torch._inductor

    toolchain.prepare_cpp_extension(device)
    program = torch.export.export(model, tuple(example), dynamic_shapes=dynamic_shapes, strict=False)
    with warnings.catch_warnings():
        # Inductor suggests TF32 for speed on CUDA. TF32 stays off on purpose (toolchain.strict_fp32): the
        # C++ runtime runs fp32 strictly and the tolerance policy compares CUDA with CPU fp32.
        warnings.filterwarnings("ignore", r"TensorFloat32 tensor cores .* available but not enabled", UserWarning)
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    return program


def load_pt2(path: Path, device: str = "cpu") -> Runner:
    import torch._inductor

    toolchain.prepare_cpp_extension(device, compiling=False)
    runner = torch._inductor.aoti_load_package(str(path))

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode():
            return _cpu(as_tuple(runner(*_to(inputs, device))))

    return run


LOADERS: dict[str, Callable[[Path, str], Runner]] = {
    "torchscript": load_torchscript,
    "onnx": load_onnx,
    "pt2": load_pt2,
}
