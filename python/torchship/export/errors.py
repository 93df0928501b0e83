"""The one error export raises, and how a deep exception chain becomes one readable cause."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ExportError(RuntimeError):
    """An artifact could not be written, or did not match eager PyTorch. Nothing was written."""


def root_cause(error: BaseException, limit: int = 600) -> str:
    """``Type: message`` of the innermost cause (the ONNX exporter wraps the real reason three levels deep)."""
    seen: set[int] = set()
    inner = error
    while inner.__cause__ is not None and id(inner.__cause__) not in seen:
        seen.add(id(inner))
        inner = inner.__cause__
    text = _ANSI.sub("", str(inner)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    message = " ".join(lines[:3]) if lines else "(no message)"
    if len(message) > limit:
        message = message[: limit - 3] + "..."
    return f"{type(inner).__name__}: {message}"
