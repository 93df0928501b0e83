"""Open Inference Protocol datatypes and input coercion, shared by the client, the runtime and export.

Deliberately free of ``torchship._C``: the HTTP client must work without the native build.
"""

from __future__ import annotations

import numpy as np
import torch

# Open Inference Protocol datatype name -> torch dtype; the same set as cpp/src/dtypes.cpp (BYTES is not supported).
DTYPES: dict[str, torch.dtype] = {
    "FP32": torch.float32,
    "FP64": torch.float64,
    "FP16": torch.float16,
    "BF16": torch.bfloat16,
    "INT8": torch.int8,
    "INT16": torch.int16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "UINT8": torch.uint8,
    "UINT16": torch.uint16,
    "BOOL": torch.bool,
}
_DATATYPES: dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPES.items()}

TensorLike = torch.Tensor | np.ndarray


def datatype_of(dtype: torch.dtype) -> str:
    """The protocol name of ``dtype``, e.g. ``torch.float32`` -> ``"FP32"``."""
    try:
        return _DATATYPES[dtype]
    except KeyError:
        raise ValueError(f"{dtype} has no Open Inference Protocol datatype") from None


def dtype_of(datatype: str) -> torch.dtype:
    """The torch dtype of a protocol name, e.g. ``"FP32"`` -> ``torch.float32``."""
    try:
        return DTYPES[datatype]
    except KeyError:
        raise ValueError(f"unsupported datatype {datatype!r}") from None


def as_tensor(x: TensorLike, name: str) -> torch.Tensor:
    """A torch view of an input: tensors as given (device and layout kept), NumPy arrays made contiguous.

    A contiguous array is wrapped without a copy. Anything else (lists included) is refused rather
    than guessed at, so a dtype never comes from Python's type inference.
    """
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))  # zero-copy when already contiguous
    raise TypeError(f"input {name!r}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
