"""Run: .venv/bin/python -m pytest tests/server/test_grpc_lifecycle.py -q

The gRPC front end under the events a deployment sees, driven by tritonclient's gRPC client: a client
that gives up while its request is queued (the request is dropped before it runs and counted
cancelled), SIGTERM with a call in flight (it completes; the process exits 0), and every finished
call counted by status code in /metrics. The model sleeps on purpose (torchship_test::sleep_ms from
the test operator library, listed in its config.json "libraries"), so "in flight" and "queued" are
certain rather than raced.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from server_helpers import TEST_OPS, StartServer, metric, save_scripted

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

SLEEP_MS = 600


class Slow(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.torchship_test.sleep_ms(x, 600) * 2  # SLEEP_MS


@pytest.fixture(scope="module")
def slow_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.ops.load_library(str(TEST_OPS))
    repo = tmp_path_factory.mktemp("slow")
    model_dir = save_scripted(
        repo, "slow", Slow(), [("x", "FP32", [3])], [("y", "FP32", [3])], libraries=["libtest_ops.so"]
    )
    shutil.copy(TEST_OPS, model_dir / "libtest_ops.so")
    # One request per batch: a second request waits in the queue behind the first.
    (model_dir / "config.json").write_text(
        (model_dir / "config.json").read_text().replace('"max_batch_size": 4', '"max_batch_size": 1')
    )
    return repo


def _infer(client, x: np.ndarray, **kwargs) -> np.ndarray:
    inp = grpcclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer("slow", [inp], **kwargs).as_numpy("y")


def test_a_client_that_leaves_has_its_queued_request_dropped(start_server: StartServer, slow_repository: Path) -> None:
    server = start_server(slow_repository, "--grpc-port", "0", "--strict", "--max-queue-delay-us", "0")
    url = f"127.0.0.1:{server.grpc_port}"
    x = np.arange(3, dtype=np.float32).reshape(1, 3)
    results: list[np.ndarray] = []
    with grpcclient.InferenceServerClient(url) as first:
        busy = threading.Thread(target=lambda: results.append(_infer(first, x)))
        busy.start()
        time.sleep(0.2)  # the first request occupies the only instance
        with grpcclient.InferenceServerClient(url) as second, pytest.raises(InferenceServerException, match="Deadline"):
            _infer(second, x, client_timeout=0.2)  # gives up while queued behind the first
        busy.join(timeout=10)
    assert len(results) == 1 and np.array_equal(results[0], x * 2)
    time.sleep(SLEEP_MS / 1000 + 0.3)  # the instance frees; the dropped request must not run
    labels = 'model="slow",version="1"'
    assert metric(server, f'torchship_inference_failure_total{{{labels},reason="cancelled"}}') == 1
    assert metric(server, f"torchship_inference_success_total{{{labels}}}") == 1
    assert metric(server, f"torchship_batches_total{{{labels}}}") == 1  # warm-up runs outside the batcher
    assert metric(server, 'torchship_grpc_responses_total{code="OK"}') == 1
    assert metric(server, 'torchship_grpc_responses_total{code="CANCELLED"}') == 1


def test_sigterm_lets_a_grpc_call_in_flight_finish(start_server: StartServer, slow_repository: Path) -> None:
    server = start_server(slow_repository, "--grpc-port", "0", "--strict", "--drain-timeout-s", "10")
    x = np.ones((1, 3), dtype=np.float32)
    results: list[np.ndarray] = []
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        call = threading.Thread(target=lambda: results.append(_infer(client, x)))
        call.start()
        time.sleep(0.2)  # in flight: the model is sleeping
        started = time.monotonic()
        assert server.stop() == 0, server.log()
        call.join(timeout=10)
    assert len(results) == 1 and np.array_equal(results[0], x * 2)  # nothing in flight is lost
    assert time.monotonic() - started < SLEEP_MS / 1000 + 5  # exits once the call is answered, not at the deadline
