"""Run: .venv/bin/python -m pytest tests/server/test_errors.py -q

Every way a request can be wrong gets its own status and a {"error": ...} body
naming the problem: 400 bad request, 404 unknown model/version/path, 405 wrong
method, 413 body over --max-body-bytes, 415 multipart, 503 (+ Retry-After)
overloaded or not ready. The server keeps serving after each.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from server_helpers import StartServer, metric

MODEL = "thermometer_linear"
INFER = f"/v2/models/{MODEL}/infer"
T_U = {"name": "t_u", "shape": [1, 1], "datatype": "FP32", "data": [80.0]}


def request(*inputs: dict, **top: object) -> bytes:
    return json.dumps({"inputs": list(inputs), **top}).encode()


def with_input(**changes: object) -> bytes:
    return request({**T_U, **changes})


def binary(header: dict, payload: bytes, header_length: int | None = None) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(header).encode()
    length = len(raw) if header_length is None else header_length
    return raw + payload, {"Inference-Header-Content-Length": str(length)}


DEEP = b'{"inputs":[],"x":' + b"[" * 100 + b"]" * 100 + b"}"
T_U_BINARY = {"name": "t_u", "shape": [1, 1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}
BINARY_WRONG_SIZE = binary({"inputs": [{**T_U_BINARY, "parameters": {"binary_data_size": 3}}]}, b"\0\0\0")
BINARY_LEFTOVER = binary({"inputs": [T_U_BINARY]}, b"\0" * 9)
BINARY_HEADER_TOO_LONG = binary({"inputs": [T_U]}, b"", header_length=9999)

# id, method, path, body, headers, status, message fragment
CASES = [
    ("malformed-json", "POST", INFER, b"{oops", {}, 400, "malformed JSON"),
    ("empty-body", "POST", INFER, b"", {}, 400, "empty request"),
    ("not-an-object", "POST", INFER, b"[1, 2]", {}, 400, "must be a JSON object"),
    ("no-inputs", "POST", INFER, request(), {}, 400, "no 'inputs'"),
    ("unknown-input", "POST", INFER, with_input(name="x"), {}, 400, "has no input 'x' (inputs: 't_u')"),
    ("duplicate-input", "POST", INFER, request(T_U, T_U), {}, 400, "input 't_u' given more than once"),
    ("wrong-datatype", "POST", INFER, with_input(datatype="INT64", data=[80]), {}, 400, "expected datatype FP32"),
    ("unknown-datatype", "POST", INFER, with_input(datatype="FP99"), {}, 400, "unknown datatype 'FP99'"),
    ("bytes-datatype", "POST", INFER, with_input(datatype="BYTES", data=["a"]), {}, 400, "BYTES is not supported"),
    ("shape-data-mismatch", "POST", INFER, with_input(shape=[2, 1]), {}, 400, "needs 2 elements, 'data' holds 1"),
    ("too-many-elements", "POST", INFER, with_input(data=[1.0, 2.0]), {}, 400, "more than the 1 elements"),
    ("wrong-shape", "POST", INFER, with_input(shape=[1, 2], data=[1, 2]), {}, 400, "expected shape [-1, 1]"),
    ("wrong-rank", "POST", INFER, with_input(shape=[1]), {}, 400, "expected shape [-1, 1] (rank 2), received [1]"),
    (
        "batch-over-max",
        "POST",
        INFER,
        with_input(shape=[257, 1], data=[1.0] * 257),
        {},
        400,
        "batch size 257 is outside 1..256",
    ),
    ("batch-zero", "POST", INFER, with_input(shape=[0, 1], data=[]), {}, 400, "batch size 0 is outside"),
    ("string-element", "POST", INFER, with_input(data=["80"]), {}, 400, "holds a string"),
    ("out-of-range", "POST", INFER, with_input(data=[1e39]), {}, 400, "data element 0: value out of range for FP32"),
    ("ragged", "POST", INFER, with_input(shape=[3, 1], data=[[1.0], [2.0, 3.0]]), {}, 400, "ragged"),
    (
        "nested-wrong-shape",
        "POST",
        INFER,
        with_input(shape=[1, 2], data=[[1.0], [2.0]]),
        {},
        400,
        "nested 'data' has shape [2, 1]",
    ),
    ("shape-not-ints", "POST", INFER, with_input(shape=[1.5, 1]), {}, 400, "'shape' must be an array of integers"),
    (
        "missing-name",
        "POST",
        INFER,
        request({k: v for k, v in T_U.items() if k != "name"}),
        {},
        400,
        "inputs[0] has no 'name'",
    ),
    ("deep-json", "POST", INFER, DEEP, {}, 400, "nested deeper than 32 levels"),
    (
        "unknown-output",
        "POST",
        INFER,
        request(T_U, outputs=[{"name": "nope"}]),
        {},
        400,
        "has no output 'nope' (outputs: 't_c')",
    ),
    (
        "binary-size-mismatch",
        "POST",
        INFER,
        *BINARY_WRONG_SIZE,
        400,
        "binary_data_size is 3 bytes, but shape [1, 1] of FP32 needs 4",
    ),
    (
        "binary-leftover",
        "POST",
        INFER,
        *BINARY_LEFTOVER,
        400,
        "bytes after the JSON header, but the inputs' binary_data_size add up to 4",
    ),
    ("header-length-past-body", "POST", INFER, *BINARY_HEADER_TOO_LONG, 400, "Inference-Header-Content-Length is 9999"),
    (
        "header-length-garbage",
        "POST",
        INFER,
        request(T_U),
        {"Inference-Header-Content-Length": "12abc"},
        400,
        "must be a non-negative integer",
    ),
    ("binary-without-header", "POST", INFER, request(T_U_BINARY), {}, 400, "no Inference-Header-Content-Length header"),
    (
        "unknown-model",
        "POST",
        "/v2/models/nope/infer",
        request(T_U),
        {},
        404,
        "unknown model 'nope' (available: thermometer_linear)",
    ),
    ("unknown-model-metadata", "GET", "/v2/models/nope", None, {}, 404, "unknown model 'nope'"),
    (
        "unknown-version",
        "POST",
        f"/v2/models/{MODEL}/versions/7/infer",
        request(T_U),
        {},
        404,
        "has no version '7' loaded (loaded: 1)",
    ),
    ("unknown-version-ready", "GET", f"/v2/models/{MODEL}/versions/7/ready", None, {}, 404, "no version '7'"),
    (
        "invalid-version",
        "GET",
        f"/v2/models/{MODEL}/versions/1x",
        None,
        {},
        400,
        "invalid model version '1x': expected digits",
    ),
    ("dot-dot-model", "POST", "/v2/models/%2e%2e/infer", request(T_U), {}, 400, "invalid model name '..'"),
    ("encoded-slash-model", "GET", "/v2/models/..%2F..%2Fetc%2Fpasswd", None, {}, 404, "no route"),
    ("unknown-path", "GET", "/v3/models", None, {}, 404, "no route for '/v3/models'"),
    ("trailing-segment", "GET", f"/v2/models/{MODEL}/ready/now", None, {}, 404, "no route"),
    ("get-infer", "GET", INFER, None, {}, 405, "method 'GET' is not allowed"),
    ("post-live", "POST", "/v2/health/live", b"{}", {}, 405, "method 'POST' is not allowed"),
    ("delete-model", "DELETE", f"/v2/models/{MODEL}", None, {}, 405, "method 'DELETE' is not allowed"),
    ("put-model", "PUT", f"/v2/models/{MODEL}", b"{}", {}, 405, "method 'PUT' is not allowed"),
    (
        "multipart",
        "POST",
        INFER,
        b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--b--\r\n",
        {"Content-Type": "multipart/form-data; boundary=b"},
        415,
        "multipart/form-data is not supported",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_error_status_and_message(
    http: httpx.Client, method: str, path: str, body: bytes | None, headers: dict[str, str], status: int, fragment: str
) -> None:
    response = http.request(method, path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert fragment in response.json()["error"]
    if status == 405:
        assert response.headers["allow"] in ("POST", "GET, HEAD")
    # The same connection still serves a valid request.
    ok = http.post(INFER, content=request(T_U))
    assert ok.status_code == 200, ok.text


def test_body_over_max_body_bytes_is_413(start_server: StartServer, thermometer_repository: Path) -> None:
    server = start_server(thermometer_repository, "--max-body-bytes", "4096")
    big = with_input(shape=[1000, 1], data=[1.25] * 1000)
    assert len(big) > 4096
    with httpx.Client(base_url=server.url) as http:
        response = http.post(INFER, content=big)
        assert response.status_code == 413
        assert "exceeds --max-body-bytes (4096 bytes)" in response.json()["error"]
        chunked = http.post(INFER, content=iter([big[:3000], big[3000:]]))  # Transfer-Encoding: chunked
        assert chunked.request.headers["transfer-encoding"] == "chunked"
        assert chunked.status_code == 413
        small_chunked = http.post(INFER, content=iter([request(T_U)]))
        assert small_chunked.status_code == 200, small_chunked.text
        assert http.post(INFER, content=request(T_U)).status_code == 200


def test_overload_is_503_with_retry_after(start_server: StartServer, thermometer_repository: Path) -> None:
    # One request may wait (max-queue-size 1) and it waits 0.5 s for company: the rest are turned away.
    server = start_server(thermometer_repository, "--max-queue-size", "1", "--max-queue-delay-us", "500000")
    n = 6
    barrier = threading.Barrier(n)
    responses: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            barrier.wait()
            responses.append(http.post(INFER, content=request(T_U)))

    threads = [threading.Thread(target=send) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 503 in statuses, statuses
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            assert "request queue is full" in r.json()["error"]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert (
        f'torchship_inference_failure_total{{model="{MODEL}",version="1",reason="overloaded"}} {statuses.count(503)}'
        in metrics
    )


def test_a_full_queue_refuses_before_decoding(start_server: StartServer, thermometer_repository: Path) -> None:
    """While the queue is full the body is not even parsed: a malformed one gets the 503 too, and counts as
    overloaded; once the queue drains the same body is a 400 again."""
    server = start_server(thermometer_repository, "--max-queue-size", "1", "--max-queue-delay-us", "2000000")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        waiting = threading.Thread(target=lambda: http.post(INFER, content=request(T_U)))
        waiting.start()  # sits in the queue for up to 2 s, waiting for company
        deadline, depth = time.monotonic() + 10, f'torchship_queue_depth{{model="{MODEL}",version="1"}}'
        while metric(server, depth) != 1:
            assert time.monotonic() < deadline, "the first request never queued"
            time.sleep(0.01)
        refused = http.post(INFER, content=b"{oops")
        assert refused.status_code == 503 and "request queue is full" in refused.json()["error"], refused.text
        waiting.join()
        assert http.post(INFER, content=b"{oops").status_code == 400
        metrics = http.get("/metrics").text
    assert f'torchship_inference_failure_total{{model="{MODEL}",version="1",reason="overloaded"}} 1' in metrics


def test_not_ready_while_loading(start_server: StartServer, thermometer_repository: Path, tmp_path: Path) -> None:
    # config.json as a FIFO: loading blocks on it until the test writes it, so "loading" lasts as long as needed.
    repo = tmp_path / "repo"
    shutil.copytree(thermometer_repository, repo)
    config = repo / MODEL / "config.json"
    text = config.read_text()
    config.unlink()
    os.mkfifo(config)
    server = start_server(repo, wait_ready=False)
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/v2/health/live").status_code == 200
        ready = http.get("/v2/health/ready")
        assert ready.status_code == 503 and "loading models" in ready.json()["error"]
        for method, path in (("GET", f"/v2/models/{MODEL}"), ("GET", f"/v2/models/{MODEL}/ready"), ("POST", INFER)):
            r = http.request(method, path, content=request(T_U) if method == "POST" else None)
            assert r.status_code == 503 and "still loading" in r.json()["error"], (path, r.text)
        assert "torchship_ready 0" in http.get("/metrics").text
        config.write_text(text)  # unblocks the loader
        server.wait_ready()
        assert http.post(INFER, content=request(T_U)).status_code == 200
    assert server.stop() == 0


def test_with_strict_a_model_that_fails_to_load_stops_the_server(
    start_server: StartServer, thermometer_repository: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(thermometer_repository, repo)
    (repo / MODEL / "1" / "model.pt").write_bytes(b"not a TorchScript archive")
    server = start_server(repo, "--strict", wait_ready=False)
    assert server.proc is not None
    assert server.proc.wait(timeout=60) == 1
    server.kill()  # closes its pipes
    log = server.log()
    assert f"cannot load model '{MODEL}' version 1" in log and "model.pt" in log, log


def test_bad_command_lines_exit_non_zero(thermometer_repository: Path, tmp_path: Path) -> None:
    import subprocess

    from torchship.server_process import server_binary

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(server_binary()), *args], capture_output=True, text=True, timeout=60)

    assert run("--http-port", "0").returncode != 0  # --model-repository is required
    missing = run("--model-repository", str(tmp_path / "missing"))
    assert missing.returncode != 0 and "missing" in missing.stderr
    device = run("--model-repository", str(thermometer_repository), "--device", "tpu", "--http-port", "0")
    assert device.returncode == 2 and "bad device 'tpu'" in device.stderr
