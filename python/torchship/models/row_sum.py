"""Chapter 15: ``myfn``, the book's trace-versus-script example, as a servable module.

The book's ``myfn`` adds up the rows of one matrix with a Python loop:
``torch.jit.trace`` unrolls the loop for the example's row count (and warns),
``torch.jit.script`` keeps it. Here each sample of the batch is a matrix, so the
sum runs over dim 1 (dim 0 is the batch), and the entry exports with "script".

The declared input is fixed at 5x5 (the book's ``torch.randn(5, 5)``): the
scripted module handles any size, but ONNX and .pt2 unroll the loop like a
trace, and the interface has to hold for every format.
"""

from __future__ import annotations

import torch
from torch import nn

from torchship.models.registry import TensorSpec, register_model


class RowSum(nn.Module):
    """``out[n] = x[n, 0] + x[n, 1] + ... + x[n, R-1]``, written as the book's loop."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x[:, 0]
        for i in range(1, x.size(1)):
            y = y + x[:, i]
        return y


register_model(
    "row_sum",
    inputs=(TensorSpec("x", (-1, 5, 5)),),
    outputs=(TensorSpec("y", (-1, 5)),),
    description="Chapter 15 myfn: sum of rows with a loop, captured by torch.jit.script",
    torchscript="script",
    max_batch_size=256,
)(RowSum)
