"""The artifact formats: how each is written, and how each is loaded back in
its own runtime for verification (TorchScript in Python, ONNX Runtime,
the AOTInductor loader)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

log = logging.getLogger("torchship.export")

Runner = Callable[..., tuple[torch.Tensor, ...]]
ONNX_OPSET = 18

ARTIFACT_NAMES = {"torchscript": "model.pt", "onnx": "model.onnx", "pt2": "model.pt2"}
_noted_jit_deprecation = False


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
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*")
        yield


def as_tuple(out: object) -> tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, (tuple, list)):
        return tuple(t for o in out for t in as_tuple(o))
    raise TypeError(f"model returned {type(out).__name__}; expected a tensor or a tuple of tensors")


# --- TorchScript ------------------------------------------------------------


def export_torchscript(model: torch.nn.Module, example: Sequence[torch.Tensor], path: Path, method: str) -> None:
    with torchscript_deprecation_noted():
        if method == "script":
            module = torch.jit.script(model)
        elif method == "trace":
            module = torch.jit.trace(model, tuple(example))
        else:
            raise ValueError(f"TorchScript method must be 'trace' or 'script', not {method!r}")
        module.save(str(path))


def load_torchscript(path: Path) -> Runner:
    with torchscript_deprecation_noted():
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode(), torchscript_deprecation_noted():
            return as_tuple(module(*inputs))

    return run


# --- ONNX -------------------------------------------------------------------


def _dynamic_batch(n_inputs: int, max_batch_size: int) -> tuple[dict[int, torch.export.Dim], ...]:
    batch = torch.export.Dim("batch", min=1, max=max_batch_size)
    return tuple({0: batch} for _ in range(n_inputs))


def export_onnx(
    model: torch.nn.Module,
    example: Sequence[torch.Tensor],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    max_batch_size: int,
) -> None:
    import onnx

    program = torch.onnx.export(
        model,
        tuple(example),
        dynamo=True,
        opset_version=ONNX_OPSET,
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_shapes=_dynamic_batch(len(example), max_batch_size),
        external_data=False,
        optimize=True,
        verify=False,
        report=False,
        verbose=False,
    )
    program.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)


def load_onnx(path: Path) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(names, inputs, strict=True)}
        return tuple(torch.from_numpy(o) for o in session.run(None, feeds))

    return run


# --- torch.export + AOTInductor (.pt2) ----------------------------------------


def export_pt2(model: torch.nn.Module, example: Sequence[torch.Tensor], path: Path, max_batch_size: int) -> None:
    program = torch.export.export(
        model, tuple(example), dynamic_shapes=_dynamic_batch(len(example), max_batch_size), strict=False
    )
    torch._inductor.aoti_compile_and_package(program, package_path=str(path))


def load_pt2(path: Path) -> Runner:
    runner = torch._inductor.aoti_load_package(str(path))

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode():
            return as_tuple(runner(*inputs))

    return run
