"""Run: .venv/bin/python -m pytest tests/server/test_standard_clients.py -q

Both front ends driven by a standard client from PyPI (tritonclient's gRPC and HTTP clients), not by
stubs generated from our own .proto: health, metadata, model config, statistics, repository index,
inference checked against eager PyTorch, and errors mapped to the protocol's status codes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from torchship import tolerance
from torchship.server_process import ServerProcess

grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "thermometer_linear"


@pytest.fixture(scope="module")
def server(thermometer_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("clients") / "server.log"
    s = ServerProcess(thermometer_repository, "--device", "cpu", "--grpc-port", "0", log_path=log).start()
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture
def grpc(server: ServerProcess):
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        yield client


@pytest.fixture
def http(server: ServerProcess):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield client
    client.close()


def test_health_metadata_config_index(grpc, http) -> None:
    for client in (grpc, http):
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert not http.is_model_ready(MODEL, "7")  # no such version
    assert grpc.get_server_metadata(as_json=True)["name"] == "torchship"
    meta = grpc.get_model_metadata(MODEL, as_json=True)
    assert meta["inputs"][0] == {"name": "t_u", "datatype": "FP32", "shape": ["-1", "1"]}
    assert http.get_model_metadata(MODEL)["outputs"][0]["name"] == "t_c"
    config = grpc.get_model_config(MODEL, as_json=True)["config"]
    assert config["max_batch_size"] == 256 and config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["input"][0]["dims"] == ["1"]
    assert http.get_model_config(MODEL)["output"][0]["name"] == "t_c"
    assert grpc.get_model_repository_index(as_json=True)["models"] == [
        {"name": MODEL, "version": "1", "state": "READY"}
    ]
    assert http.get_model_repository_index()[0]["state"] == "READY"


@pytest.mark.parametrize("batch", [1, 3, 256])
def test_inference_through_both_front_ends_matches_eager(grpc, http, thermometer_eager, batch: int) -> None:
    x = (torch.rand(batch, 1) * 100).numpy().astype(np.float32)
    with torch.no_grad():
        expected = thermometer_eager(torch.from_numpy(x))
    g_in = grpcclient.InferInput("t_u", list(x.shape), "FP32")
    g_in.set_data_from_numpy(x)
    g = grpc.infer(MODEL, [g_in], request_id="r1")
    assert g.get_response().id == "r1"
    h_in = httpclient.InferInput("t_u", list(x.shape), "FP32")
    h_in.set_data_from_numpy(x, binary_data=True)
    h = http.infer(MODEL, [h_in], outputs=[httpclient.InferRequestedOutput("t_c", binary_data=True)])
    for name, got in (("grpc", g.as_numpy("t_c")), ("http", h.as_numpy("t_c"))):
        tolerance.assert_close(torch.from_numpy(got.copy()), expected, tolerance.tolerance("server"), f"server {name}")


def test_statistics_count_requests(grpc) -> None:
    before = grpc.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    x = np.array([[50.0]], dtype=np.float32)
    inp = grpcclient.InferInput("t_u", [1, 1], "FP32")
    inp.set_data_from_numpy(x)
    for _ in range(3):
        grpc.infer(MODEL, [inp])
    after = grpc.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    success = lambda s: int(s["inference_stats"]["success"].get("count", 0))  # noqa: E731
    assert success(after) == success(before) + 3
    # compute_input / compute_output: each request's decode and encode (per request; docs/architecture.md)
    for stage in ("compute_input", "compute_output"):
        counts = [int(s["inference_stats"][stage].get("count", 0)) for s in (before, after)]
        assert counts[1] == counts[0] + 3, stage
        assert int(after["inference_stats"][stage].get("ns", 0)) > 0


def test_errors_map_to_grpc_status_codes(grpc) -> None:
    def status(fn) -> tuple[str, str]:
        with pytest.raises(InferenceServerException) as e:
            fn()
        return e.value.status(), e.value.message()

    wrong = grpcclient.InferInput("t_u", [1, 1], "FP64")
    wrong.set_data_from_numpy(np.array([[1.0]], dtype=np.float64))
    code, message = status(lambda: grpc.infer(MODEL, [wrong]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "FP32" in message and "float" not in message.lower()
    ok = grpcclient.InferInput("t_u", [1, 1], "FP32")
    ok.set_data_from_numpy(np.array([[1.0]], dtype=np.float32))
    code, message = status(lambda: grpc.infer("nope", [ok]))
    assert code == "StatusCode.NOT_FOUND" and "available: thermometer_linear" in message
    code, message = status(lambda: grpc.infer(MODEL, [ok], outputs=[grpcclient.InferRequestedOutput("x")]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "t_c" in message
    code, _ = status(lambda: grpc.get_model_metadata("nope"))
    assert code == "StatusCode.NOT_FOUND"
