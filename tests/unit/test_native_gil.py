"""Run: .venv/bin/pytest tests/unit/test_native_gil.py -s

The bindings release the GIL: two Python threads calling a CPU-bound model
through torchship._C overlap. Prints the measured speed-up; asserts only a
generous bound so a busy CI machine does not make it flaky.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from torchship import models, runtime
from torchship.export import export_checkpoint
from torchship.models.registry import ModelEntry, TensorSpec
from torchship.training.checkpoint import make_checkpoint, save_checkpoint


class _Burner(nn.Module):
    """A deep stack of 256-wide layers: pure CPU compute, no Python in the loop once exported."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[nn.Sequential(nn.Linear(256, 256), nn.Tanh()) for _ in range(24)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


if "test_gil_burner" not in models.names():
    models.register(
        ModelEntry(
            name="test_gil_burner",
            constructor=_Burner,
            inputs=(TensorSpec("x", (-1, 256)),),
            outputs=(TensorSpec("y", (-1, 256)),),
            description="test-only CPU-bound model",
            max_batch_size=64,
        )
    )


@pytest.fixture(scope="module")
def burner_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("gil")
    ckpt = save_checkpoint(tmp / "burner.ckpt", make_checkpoint("test_gil_burner", _Burner()))
    export_checkpoint(ckpt, tmp / "repo", ["torchscript"])
    return tmp / "repo"


def test_two_python_threads_run_in_parallel(burner_repository: Path) -> None:
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)  # one core per call, so two calls can use both cores
    try:
        with runtime.Runtime(burner_repository, instance_count=2) as rt:
            model = rt.model("test_gil_burner")
            x = torch.randn(64, 256)
            calls = 40

            def work(n: int) -> None:
                for _ in range(n):
                    model.infer(x)

            work(4)  # warm
            t0 = time.perf_counter()
            work(2 * calls)
            sequential = time.perf_counter() - t0
            t0 = time.perf_counter()
            pool = [threading.Thread(target=work, args=(calls,)) for _ in range(2)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            parallel = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads_before)
    ratio = sequential / parallel
    print(f"\n{2 * calls} calls: sequential {sequential:.3f}s, 2 threads {parallel:.3f}s, speed-up {ratio:.2f}x")
    # With the GIL held the speed-up would be <= 1.0; 2 free cores give ~2x.
    assert ratio > 1.3, f"2 threads were only {ratio:.2f}x faster than 1: is the GIL released?"
