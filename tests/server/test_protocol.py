"""Run: .venv/bin/python -m pytest tests/server/test_protocol.py -q

torchship-server speaks the Open Inference Protocol (KServe v2): health,
metadata, metrics, and inference whose outputs equal eager PyTorch through JSON
(flat and nested) and through the binary tensor data extension.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from server_helpers import StartServer

from torchship import tolerance
from torchship.client import HEADER_LENGTH, Client, ServerError
from torchship.server_process import ServerProcess, server_binary

MODEL = "thermometer_linear"
TORCHSHIP = Path(sys.executable).with_name("torchship")


def expected(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def test_health_and_server_metadata(http: httpx.Client) -> None:
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}
    meta = http.get("/v2").json()
    assert meta["name"] == "torchship"
    assert meta["version"]
    assert "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("prefix", [f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/1"])
def test_model_metadata_and_readiness(http: httpx.Client, prefix: str) -> None:
    meta = http.get(prefix).json()
    assert meta == {
        "name": MODEL,
        "versions": ["1"],
        "platform": "pytorch_libtorch",
        "inputs": [{"name": "t_u", "datatype": "FP32", "shape": [-1, 1]}],
        "outputs": [{"name": "t_c", "datatype": "FP32", "shape": [-1, 1]}],
    }
    ready = http.get(f"{prefix}/ready")
    assert ready.status_code == 200
    assert ready.json() == {"name": MODEL, "ready": True}


@pytest.mark.parametrize("batch", [1, 3, 256])
@pytest.mark.parametrize("binary_inputs", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("binary_outputs", [False, True], ids=["json-out", "binary-out"])
def test_outputs_equal_eager(
    thermometer_server: ServerProcess,
    thermometer_eager: torch.nn.Module,
    batch: int,
    binary_inputs: bool,
    binary_outputs: bool,
) -> None:
    x = torch.randn(batch, 1, generator=torch.Generator().manual_seed(batch)) * 30 + 50
    with Client(thermometer_server.url) as client:
        got = client.infer(MODEL, x, binary_inputs=binary_inputs, binary_outputs=binary_outputs)["t_c"]
    c = tolerance.assert_close(got, expected(thermometer_eager, x), tolerance.tolerance("server"), MODEL)
    print(f"batch {batch}: {c}")


def test_nested_and_flat_json_data_agree(http: httpx.Client, thermometer_eager: torch.nn.Module) -> None:
    values = [[35.7], [55.9], [58.2]]
    answers = []
    for data in (values, [v[0] for v in values]):
        body = {"inputs": [{"name": "t_u", "shape": [3, 1], "datatype": "FP32", "data": data}]}
        response = http.post(f"/v2/models/{MODEL}/infer", json=body)
        assert response.status_code == 200, response.text
        out = response.json()["outputs"][0]
        assert out["name"] == "t_c" and out["datatype"] == "FP32" and out["shape"] == [3, 1]
        answers.append(torch.tensor(out["data"], dtype=torch.float32).reshape(3, 1))
    assert torch.equal(answers[0], answers[1])
    ref = expected(thermometer_eager, torch.tensor(values))
    tolerance.assert_close(answers[0], ref, tolerance.tolerance("server"), "nested JSON")


def test_id_is_echoed_and_outputs_are_selected(http: httpx.Client) -> None:
    body = {
        "id": 'req-42 \u00e9"\n',
        "inputs": [{"name": "t_u", "shape": [1, 1], "datatype": "FP32", "data": [80.0]}],
        "outputs": [{"name": "t_c", "parameters": {"binary_data": True}}],
    }
    header = json.dumps(body).encode()
    response = http.post(f"/v2/models/{MODEL}/infer", content=header)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    json_length = int(response.headers[HEADER_LENGTH])
    doc = json.loads(response.content[:json_length])
    assert doc["id"] == body["id"]
    assert doc["model_name"] == MODEL and doc["model_version"] == "1"
    assert doc["outputs"] == [
        {"name": "t_c", "datatype": "FP32", "shape": [1, 1], "parameters": {"binary_data_size": 4}}
    ]
    assert len(response.content) == json_length + 4
    no_id = http.post(f"/v2/models/{MODEL}/infer", json={"inputs": body["inputs"]})
    assert "id" not in no_id.json() and no_id.headers["content-type"] == "application/json"


def test_cnn_outputs_equal_eager(start_server: StartServer, net_repository: Path, net_eager: torch.nn.Module) -> None:
    server = start_server(net_repository)
    with Client(server.url) as client:
        meta = client.model_metadata("net")
        assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
        for batch in (1, 5, 64):
            x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
            ref = expected(net_eager, x)
            for binary in (False, True):
                got = client.infer("net", x, binary_inputs=binary, binary_outputs=binary)["logits"]
                tolerance.assert_close(got, ref, tolerance.tolerance("server"), f"net batch {batch} binary={binary}")
    assert server.stop() == 0


@pytest.mark.slow
def test_pt2_artifact_outputs_equal_eager(
    start_server: StartServer, thermometer_pt2_repository: Path, thermometer_eager: torch.nn.Module
) -> None:
    server = start_server(thermometer_pt2_repository, "--format", "pt2")
    x = torch.tensor([[35.7], [81.9], [-40.0]])
    with Client(server.url) as client:
        assert client.model_metadata(MODEL)["platform"] == "pytorch_aotinductor"
        got = client.infer(MODEL, x, binary_outputs=True)["t_c"]
    tolerance.assert_close(got, expected(thermometer_eager, x), tolerance.tolerance("server"), "pt2")
    assert server.stop() == 0


def test_client_raises_with_the_server_message(thermometer_server: ServerProcess) -> None:
    with Client(thermometer_server.url) as client:
        with pytest.raises(ServerError, match=r"HTTP 400: .*expected shape \[-1, 1\].*received \[2, 3\]") as e:
            client.infer(MODEL, torch.zeros(2, 3))
        assert e.value.status == 400
        with pytest.raises(ServerError, match="unknown model 'nope'") as e:
            client.infer("nope", {"x": torch.zeros(1, 1)})
        assert e.value.status == 404


def test_metrics_exposition(http: httpx.Client) -> None:
    assert http.post(f"/v2/models/{MODEL}/infer", json={"inputs": []}).status_code == 400
    x = {"inputs": [{"name": "t_u", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}
    assert http.post(f"/v2/models/{MODEL}/infer", json=x).status_code == 200
    response = http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) \w+ .+", line), line
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    labels = f'model="{MODEL}",version="1"'
    assert samples[f"torchship_inference_success_total{{{labels}}}"] >= 1
    assert samples[f'torchship_inference_failure_total{{{labels},reason="invalid"}}'] >= 1
    stages = ("decode", "queue", "gather", "compute", "encode")  # where a request's time goes (issue 14)
    for hist in ("request_duration_seconds", *(f"{s}_duration_seconds" for s in stages), "batch_size"):
        count = samples[f"torchship_{hist}_count{{{labels}}}"]
        assert count >= 1 and samples[f'torchship_{hist}_bucket{{{labels},le="+Inf"}}'] == count
    assert f"torchship_queue_depth{{{labels}}}" in samples
    assert f"torchship_inflight_requests{{{labels}}}" in samples
    assert samples["process_resident_memory_bytes"] > 10e6
    assert samples['torchship_http_responses_total{code="400"}'] >= 1
    assert samples["torchship_ready"] == 1


def test_one_access_log_line_per_request(start_server: StartServer, thermometer_repository: Path) -> None:
    server = start_server(thermometer_repository)
    with httpx.Client(base_url=server.url) as http:
        http.get("/v2/models/thermometer_linear")
        http.post("/v2/models/thermometer_linear/infer", content=b"{oops")
        http.get("/no/such/path")
    assert server.stop() == 0  # drains and flushes the asynchronous log
    access = [line for line in server.log().splitlines() if " access " in line]
    paths = [re.search(r"method=(\S+) path=(\S+) status=(\d+)", line).groups() for line in access]  # type: ignore[union-attr]
    assert ("GET", "/v2/models/thermometer_linear", "200") in paths
    assert ("POST", "/v2/models/thermometer_linear/infer", "400") in paths
    assert ("GET", "/no/such/path", "404") in paths
    assert all(
        re.search(r"remote=127\.0\.0\.1:\d+ .* bytes_in=\d+ bytes_out=\d+ duration_ms=[\d.]+$", a) for a in access
    )


def test_cli_serve_and_predict(
    thermometer_repository: Path, thermometer_eager: torch.nn.Module, tmp_path: Path
) -> None:
    server = ServerProcess(thermometer_repository, log_path=tmp_path / "serve.log")
    # Through the Python CLI, which execs torchship-server with the same flags.
    server.cmd = [str(TORCHSHIP), "serve", "--model-repository", str(thermometer_repository), "--http-port", "0"]
    server.cmd += ["--device", "cpu", "--log-level", "warning"]
    server.start()
    try:
        x = [[35.7], [81.9]]
        ref = expected(thermometer_eager, torch.tensor(x))
        (tmp_path / "x.json").write_text(json.dumps(x))
        np.save(tmp_path / "x.npy", np.array(x, dtype=np.float64))  # converted to the model's FP32
        for name, extra in (("x.json", []), ("x.npy", ["--binary"])):
            out = subprocess.run(
                [
                    str(TORCHSHIP),
                    "predict",
                    "--model",
                    MODEL,
                    "--input",
                    str(tmp_path / name),
                    "--url",
                    server.url,
                    *extra,
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            m = re.fullmatch(r"t_c: (.*)\n", out)
            assert m, out
            got = torch.tensor(json.loads(m.group(1)))
            tolerance.assert_close(got, ref, tolerance.tolerance("server"), name)
        bad = subprocess.run(
            [str(TORCHSHIP), "predict", "--model", "nope", "--input", str(tmp_path / "x.json"), "--url", server.url],
            capture_output=True,
            text=True,
        )
        assert bad.returncode == 1 and "unknown model 'nope'" in bad.stderr
    finally:
        assert server.stop() == 0, server.log()


def test_binary_is_the_executable_under_test() -> None:
    server = server_binary()  # raises FileNotFoundError naming tools/bootstrap.sh when missing
    help_text = subprocess.run([str(server), "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--model-repository", "--http-port", "--max-body-bytes", "--max-queue-delay-us", "--intra-op-threads"):
        assert flag in help_text


def test_every_path_in_openapi_yaml_is_served(http: httpx.Client) -> None:
    yaml = pytest.importorskip("yaml")
    # Parsed, not grepped: a plain "key: value" inside a description once made the whole file invalid YAML.
    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "serve" / "openapi.yaml").read_text())
    paths = spec["paths"]
    assert len(paths) == 19, list(paths)
    body = {"inputs": [{"name": "t_u", "shape": [1, 1], "datatype": "FP32", "data": [80.0]}]}
    for template, operations in paths.items():
        path = template.replace("{model}", MODEL).replace("{version}", "1")
        if path.endswith("/image"):
            # The thermometer takes no images: each method is routed to the model, which says so (not a 404).
            methods = [m for m in operations if m != "parameters"]
            assert sorted(methods) == ["post", "put"], template
            for method in methods:
                response = http.request(method, path, content=b"\x89PNG\r\n\x1a\n")
                assert response.status_code == 400 and "takes no images" in response.json()["error"], path
            continue
        if path.endswith("/infer"):
            response = http.post(path, json=body)
        elif path == "/v2/repository/index":
            response = http.post(path, json={})
        else:
            response = http.get(path)
        assert response.status_code == 200, (path, response.text)
