"""What AOTInductor's C++ compile needs from the machine: a CUDA toolkit root, and strict fp32 on CUDA.

``torch.utils.cpp_extension`` guesses ``CUDA_HOME`` once, at import, as the
parent of the ``bin/`` holding the first ``nvcc`` on PATH. When that ``nvcc`` is
a wrapper script (``/usr/local/bin/nvcc`` doing ``exec /usr/local/cuda-13.0/bin/nvcc``)
the guess is ``/usr/local``, which holds no ``include/cuda.h``; on a machine
without a GPU it also logs "No CUDA runtime is found" at import. Here the real
toolkit is derived from the environment the way ``cmake/CudaToolkitForTorch.cmake``
does and put in place of cpp_extension's guess, and the one log line that only
says "this machine has no GPU" is replaced by a single debug line of ours.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

log = logging.getLogger("torchship.export")

_CPP_EXTENSION = "torch.utils.cpp_extension"
_NO_RUNTIME = "No CUDA runtime is found"
_WRAPPED_NVCC = re.compile(r"""([^\s"'=]+)/bin/nvcc\b""")
_said: set[str] = set()


def _is_toolkit(root: Path) -> bool:
    return (root / "bin" / "nvcc").is_file() and (root / "include" / "cuda.h").is_file()


def _wrapper_targets(script: Path) -> list[Path]:
    """Toolkit roots named by a shell script that execs ``<root>/bin/nvcc`` (first lines only)."""
    try:
        with script.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return []
    if not head.startswith(b"#!"):
        return []  # a real (binary) nvcc
    text = head.decode("utf-8", "replace")
    return [Path(m.group(1)) for m in _WRAPPED_NVCC.finditer(text)]


def toolkit_candidates() -> list[tuple[Path, str]]:
    """Where a toolkit may be, most explicit first, each with how it was found."""
    cands: list[tuple[Path, str]] = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            cands.append((Path(os.environ[var]), f"${var}"))
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = Path(os.path.realpath(nvcc))
        cands.append((real.parent.parent, f"nvcc on PATH ({nvcc})"))
        cands += [(root, f"the nvcc wrapper {nvcc}") for root in _wrapper_targets(real)]
    cands.append((Path("/usr/local/cuda"), "torch's default location"))
    return cands


def find_cuda_toolkit() -> tuple[Path, str] | None:
    """The first candidate that really holds ``bin/nvcc`` and ``include/cuda.h``, or None."""
    for root, how in toolkit_candidates():
        if _is_toolkit(root):
            return root, how
    return None


class _DropNoRuntime(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NO_RUNTIME)


def prepare_cpp_extension(device: str, compiling: bool = True) -> None:
    """Make ``torch.utils.cpp_extension`` use the real toolkit before AOTInductor compiles for (or loads on) ``device``.

    Raises RuntimeError when a CUDA compile has no toolkit: it would otherwise
    fail much later with a missing ``cuda.h``. Loading a package needs none.
    """
    found = find_cuda_toolkit() if torch.version.cuda else None
    if device == "cuda" and compiling and found is None:
        looked = ", ".join(f"{root} ({how})" for root, how in toolkit_candidates())
        raise RuntimeError(f"AOTInductor for CUDA needs a CUDA toolkit (bin/nvcc, include/cuda.h); looked in {looked}")
    if _CPP_EXTENSION not in sys.modules:
        logger = logging.getLogger(_CPP_EXTENSION)
        quiet = _DropNoRuntime()
        logger.addFilter(quiet)  # its import only says "no GPU here", which a CPU export does not need
        try:
            __import__(_CPP_EXTENSION)
        finally:
            logger.removeFilter(quiet)
    cpp_extension = sys.modules[_CPP_EXTENSION]
    current = getattr(cpp_extension, "CUDA_HOME", None)
    if found is not None and (current is None or not _is_toolkit(Path(current))):
        cpp_extension.CUDA_HOME = str(found[0])  # type: ignore[attr-defined]  # replace the wrapper's parent
    if found is not None and str(found[0]) not in _said:
        _said.add(str(found[0]))
        log.debug(
            "CUDA toolkit for AOTInductor: %s (from %s); CUDA device available: %s",
            found[0],
            found[1],
            torch.cuda.is_available(),
        )


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off for cuBLAS and cuDNN, as the C++ runtime runs by default and the tolerance policy assumes."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
