"""torchship.tensors: the one Open Inference Protocol datatype table and input coercion (no native build needed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from torchship import tensors

ALL_DATATYPES = ["FP32", "FP64", "FP16", "BF16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "BOOL"]
CPP_DTYPES = Path(__file__).resolve().parents[2] / "cpp" / "src" / "dtypes.cpp"


def test_every_datatype_round_trips_through_the_table() -> None:
    assert sorted(tensors.DTYPES) == sorted(ALL_DATATYPES)
    dtypes = [tensors.dtype_of(name) for name in ALL_DATATYPES]
    assert len(set(dtypes)) == len(dtypes)  # no two names share a dtype, so the inverse is exact
    for name, dtype in zip(ALL_DATATYPES, dtypes, strict=True):
        assert tensors.datatype_of(dtype) == name
        assert tensors.dtype_of(tensors.datatype_of(dtype)) == dtype


def test_the_table_matches_the_native_one() -> None:
    # {"FP32", torch::kFloat32} -> FP32: torch.float32; the server must accept exactly what the client sends.
    pairs = re.findall(r'\{"(\w+)", torch::k(\w+)\}', CPP_DTYPES.read_text())
    assert len(pairs) == len(ALL_DATATYPES)
    assert {name: getattr(torch, k.lower()) for name, k in pairs} == tensors.DTYPES


def test_unknown_names_and_dtypes_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported datatype 'BYTES'"):
        tensors.dtype_of("BYTES")
    with pytest.raises(ValueError, match="unsupported datatype 'fp32'"):
        tensors.dtype_of("fp32")
    with pytest.raises(ValueError, match="has no Open Inference Protocol datatype"):
        tensors.datatype_of(torch.complex64)


def test_export_and_client_use_the_same_table() -> None:
    from torchship import client
    from torchship.export import shapes

    assert shapes.DTYPES is tensors.DTYPES
    assert client.dtype_of is tensors.dtype_of and client.datatype_of is tensors.datatype_of


def test_as_tensor_passes_tensors_through_untouched() -> None:
    t = torch.arange(6.0).reshape(2, 3).T.requires_grad_()  # non-contiguous, needs grad: kept as given
    assert tensors.as_tensor(t, "x") is t


def test_as_tensor_wraps_contiguous_numpy_without_a_copy() -> None:
    x = np.arange(6, dtype=np.uint16).reshape(3, 2)
    t = tensors.as_tensor(x, "x")
    assert t.data_ptr() == x.ctypes.data and t.dtype == torch.uint16 and t.shape == (3, 2)


def test_as_tensor_makes_strided_numpy_contiguous() -> None:
    strided = np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2]
    t = tensors.as_tensor(strided, "x")
    assert t.is_contiguous() and t.tolist() == [[0, 2], [4, 6], [8, 10]] and t.dtype == torch.int64


@pytest.mark.parametrize("value", [[1.0, 2.0], (1, 2), 3.0, "x"])
def test_as_tensor_refuses_lists_and_scalars(value: object) -> None:
    with pytest.raises(TypeError, match=r"input 'x': expected a torch.Tensor or numpy.ndarray, got"):
        tensors.as_tensor(value, "x")  # type: ignore[arg-type]


def test_the_client_works_without_the_native_build() -> None:
    # A finder that hides torchship._C: importing the client (and tensors) must not need it.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torchship._C': raise ImportError('no native build')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torchship.client, torchship.tensors, torchship.export.shapes\n"
        "assert 'torchship._C' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
