"""Run: .venv/bin/python -m pytest tests/server/test_front_end.py -q

The HTTP front end as a hostile or careless client meets it: every limit (status, the connection
closed, memory bounded), pipelining answered in order, RFC 9112 framing, probes while idle and
trickling connections are open, a bounded SIGTERM drain, and per-model availability (a broken
model beside good ones, outputs that do not match config.json, symlinks out of the repository).
CI sizes: each test takes seconds.
"""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import statistics
import time
from pathlib import Path

import httpx
import pytest
from server_helpers import StartServer, closes, http_request, metric, read_responses, sigterm_while_draining

MODEL = "thermometer_linear"
INFER = f"/v2/models/{MODEL}/infer"


def infer_body(value: float = 80.0) -> bytes:
    return json.dumps({"inputs": [{"name": "t_u", "shape": [1, 1], "datatype": "FP32", "data": [value]}]}).encode()


_OPEN: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets():
    yield
    while _OPEN:
        _OPEN.pop().close()


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    """A raw client connection, closed after the test."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _OPEN.append(s)
    return s


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def front(thermometer_repository: Path, tmp_path_factory: pytest.TempPathFactory):
    """One server with small limits, so each can be met in CI time."""
    from torchship.server_process import ServerProcess

    flags = [
        "--device", "cpu", "--log-level", "warning",
        "--max-header-bytes", "16384", "--max-header-count", "50", "--max-body-bytes", "1048576",
        "--header-timeout-ms", "600", "--min-body-bytes-per-second", "20000",
        "--keep-alive-timeout-ms", "1500", "--max-connections", "700",
    ]  # fmt: skip
    server = ServerProcess(thermometer_repository, *flags, log_path=tmp_path_factory.mktemp("front") / "server.log")
    server.start()
    yield server
    assert server.stop() == 0, server.log()


# --- limits -----------------------------------------------------------------------------------


def test_an_endless_header_line_is_431_and_closed_with_memory_bounded(front) -> None:
    before = rss_bytes(front.pid)
    s = connect(front.port)
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Long: ")
    sent, refused = 0, False
    chunk = b"a" * 65536
    try:
        while sent < 64 << 20:  # 64 MB offered; the limit is 16 KB
            s.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        refused = True
    answers, closed = read_responses(s, timeout=5)
    assert refused or closed
    assert not answers or answers[0][0] == 431, answers
    assert sent < 32 << 20, f"the server read {sent} bytes of one header line before refusing"
    assert rss_bytes(front.pid) - before < 16 << 20


def test_an_unterminated_request_line_is_431(front) -> None:
    s = connect(front.port)
    s.sendall(b"GET /" + b"a" * 40000)
    answers, closed = read_responses(s, timeout=5)
    assert answers[0][0] == 431 and closed, answers


def test_too_many_headers_is_431_and_closed(front) -> None:
    s = connect(front.port)
    s.sendall(http_request("GET", "/v2/health/live", b"", *(f"X-{i}: {i}" for i in range(60))))
    answers, closed = read_responses(s)
    assert answers[0][0] == 431 and closed
    assert b"--max-header-count" in answers[0][1]


def test_a_body_over_the_limit_is_413_before_it_is_sent(front) -> None:
    s = connect(front.port)
    s.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n")
    answers, closed = read_responses(s, timeout=5)  # no body sent at all
    assert answers[0][0] == 413 and closed, answers
    assert b"--max-body-bytes" in answers[0][1]


def test_a_chunked_body_over_the_limit_is_413_while_reading(front) -> None:
    s = connect(front.port)
    s.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
    try:
        for _ in range(40):  # 2.5 MB offered; the limit is 1 MB
            s.sendall(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    answers, closed = read_responses(s, timeout=5)
    assert answers and answers[0][0] == 413 and closed, answers


def test_a_gzip_bomb_is_413(front) -> None:
    bomb = gzip.compress(b" " * (8 << 20))  # 8 MB of JSON whitespace in ~8 KB
    r = httpx.post(f"{front.url}{INFER}", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413, r.text


def test_slowloris_headers_get_408_at_the_deadline(front) -> None:
    s = connect(front.port)
    started = time.monotonic()
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
    answers: list = []
    closed = False
    for _ in range(20):  # a header byte every 100 ms: never finishes within the 600 ms deadline
        try:
            s.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(0.1)
    answers, closed = read_responses(s, timeout=3)
    elapsed = time.monotonic() - started
    assert answers and answers[0][0] == 408 and closed, answers
    assert elapsed < 3.5


def test_a_body_slower_than_the_minimum_rate_gets_408(front) -> None:
    s = connect(front.port)
    s.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
    started = time.monotonic()
    try:
        while time.monotonic() - started < 8:
            s.sendall(b"x" * 100)  # 1 KB/s against a 20 KB/s minimum
            time.sleep(0.1)
    except (BrokenPipeError, ConnectionResetError):
        pass
    answers, closed = read_responses(s, timeout=3)
    assert answers and answers[0][0] == 408 and closed, answers
    assert time.monotonic() - started < 8  # refused well before the body could have finished


def test_an_idle_keep_alive_connection_is_closed(front) -> None:
    s = connect(front.port)
    s.sendall(http_request("GET", "/v2/health/live"))
    answers, closed = read_responses(s, count=1)
    assert answers[0][0] == 200 and not closed
    started = time.monotonic()
    assert closes(s, time.monotonic() + 5)
    assert 1.0 < time.monotonic() - started < 3.0  # --keep-alive-timeout-ms 1500


def _live_status(url: str) -> int:
    try:
        return httpx.get(f"{url}/v2/health/live").status_code
    except httpx.TransportError:  # refused at the cap: closed before an answer could be read
        return 0


def test_connections_beyond_the_cap_get_503_and_are_closed(
    start_server: StartServer, thermometer_repository: Path
) -> None:
    server = start_server(thermometer_repository, "--max-connections", "4", log_level="warning")
    held = [connect(server.port) for _ in range(4)]
    for s in held:  # one answer each: every held connection is accepted and counted (no sleeps to race)
        s.sendall(http_request("GET", "/v2/health/live"))
        assert read_responses(s, count=1)[0][0][0] == 200
    extra = connect(server.port)
    answers, closed = read_responses(extra, timeout=5)
    assert answers and answers[0][0] == 503 and closed, answers
    assert b"--max-connections" in answers[0][1]
    held.pop().close()
    deadline = time.monotonic() + 10  # the server notices the close on its next read of that socket
    while (status := _live_status(server.url)) != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status == 200  # a freed slot serves again
    assert metric(server, "torchship_http_connections_refused_total") >= 1
    for s in held:
        s.close()


# --- framing ----------------------------------------------------------------------------------


def test_100_pipelined_requests_are_answered_in_order(front) -> None:
    s = connect(front.port)
    wire = b"".join(
        http_request("POST", INFER, infer_body(float(i))) if i % 3 else http_request("GET", "/v2/health/live")
        for i in range(100)
    )
    s.sendall(wire)
    answers, closed = read_responses(s, count=100, timeout=20)
    assert len(answers) == 100 and not closed
    for i, (status, body) in enumerate(answers):
        assert status == 200, (i, body)
        if i % 3:
            assert json.loads(body)["model_name"] == MODEL
        else:
            assert json.loads(body) == {"live": True}
    # The model is affine: answers in order means they grow with i.
    values = [json.loads(b)["outputs"][0]["data"][0] for i, (_, b) in enumerate(answers) if i % 3]
    assert values == sorted(values) and len(set(values)) == len(values)


@pytest.mark.parametrize(
    ("name", "wire", "status"),
    [
        (
            "two-content-lengths",
            b"POST /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 30\r\n\r\n{}",
            400,
        ),
        (
            "content-length-and-chunked",
            b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        ("malformed-request-line", b"GARBAGE\r\n\r\nGET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("trace-with-body", b"TRACE /v2 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd", 405),
        (
            "unknown-transfer-coding",
            b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
        ),
        (
            "brotli-body",
            b"POST "
            + INFER.encode()
            + b" HTTP/1.1\r\nHost: x\r\nContent-Encoding: br\r\nContent-Length: 4\r\n\r\nabcd",
            415,
        ),
    ],
)
def test_framing_errors_answer_once_and_close(front, name: str, wire: bytes, status: int) -> None:
    s = connect(front.port)
    s.sendall(wire)
    answers, closed = read_responses(s, timeout=5)
    assert [a[0] for a in answers] == [status] and closed, (name, answers)
    if status == 415:
        assert b"gzip, deflate" in answers[0][1]


def test_absolute_form_targets_and_a_trace_without_body(front) -> None:
    s = connect(front.port)
    s.sendall(http_request("POST", f"http://127.0.0.1:{front.port}{INFER}", infer_body()))
    s.sendall(b"TRACE /v2 HTTP/1.1\r\nHost: x\r\n\r\n")
    answers, _ = read_responses(s, count=2)
    assert [a[0] for a in answers] == [200, 405]


def test_gzip_and_deflate_work_both_ways(front) -> None:
    import zlib

    for coding, data in (("gzip", gzip.compress(infer_body())), ("deflate", zlib.compress(infer_body()))):
        r = httpx.post(f"{front.url}{INFER}", content=data, headers={"Content-Encoding": coding})
        assert r.status_code == 200, (coding, r.text)
    big = httpx.get(f"{front.url}/metrics", headers={"Accept-Encoding": "gzip"})
    assert big.headers.get("content-encoding") == "gzip" and "torchship_ready" in big.text


# --- probes and shutdown ----------------------------------------------------------------------


def test_probes_answer_fast_while_idle_and_trickling_connections_are_open(front) -> None:
    idle = [connect(front.port) for _ in range(300)]
    trickling = [connect(front.port) for _ in range(50)]
    for s in trickling:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nX: ")
    latencies = []
    with httpx.Client(base_url=front.url) as client:
        for _ in range(50):
            started = time.perf_counter()
            assert client.get("/v2/health/live").status_code == 200
            latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert client.post(INFER, content=infer_body()).status_code == 200
        infer_s = time.perf_counter() - started
    assert statistics.median(latencies) < 0.02 and max(latencies) < 0.2, latencies
    assert infer_s < 0.5
    for s in idle + trickling:
        s.close()


def test_sigterm_with_trickling_and_idle_clients_exits_within_the_drain_deadline(
    start_server: StartServer, thermometer_repository: Path
) -> None:
    server = start_server(thermometer_repository, "--drain-timeout-s", "2", "--header-timeout-ms", "60000")
    code, elapsed = sigterm_while_draining(server)
    assert code == 0, f"exit code {code}:\n{server.log()}"
    assert elapsed < 3.0, elapsed  # deadline + 1 s


def test_sigterm_drain_exits_0_with_torchvisions_library_loaded(
    start_server: StartServer, thermometer_repository: Path
) -> None:
    """Issue 12's crash: connections still open at the drain deadline left each session's last reference in a
    handler that ~io_context destroyed after the front end's connection registry, so ~Session erased a freed
    list node (a double free of it and, through its weak_ptr, of the session). The corrupted tcmalloc free
    lists made the process segfault at exit, by chance: with torchvision's library (libpython,
    libtorch_python) loaded, 9 of 28 SIGTERMs with one trickling connection, 8 of 8 with 64 (7 of 8 without
    the library; benchmarks/drain_repro.py). Before the fix, 10 of 10 runs of this test failed."""
    import torchvision

    here = Path(torchvision.__file__).parent
    library = next(here / n for n in ("_C_stable.so", "_C.so") if (here / n).is_file())
    for _ in range(3):  # before the fix, about 2 rounds in 3 crashed
        flags = ["--drain-timeout-s", "1", "--header-timeout-ms", "60000", "--extra-library", str(library)]
        server = start_server(thermometer_repository, *flags)
        code, elapsed = sigterm_while_draining(server, trickling=64)
        assert code == 0, f"exit code {code}:\n{server.log()}"
        assert elapsed < 2.0, elapsed  # deadline + 1 s
        assert f"operator library: {library}" in server.log()  # (flushed at exit)


# --- per-model availability -------------------------------------------------------------------


def _repo_with(thermometer_repository: Path, tmp_path: Path, name: str) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(thermometer_repository, repo)
    shutil.copytree(repo / MODEL, repo / name)
    config = json.loads((repo / name / "config.json").read_text())
    config["name"] = name
    (repo / name / "config.json").write_text(json.dumps(config))
    return repo


def test_a_broken_model_beside_a_good_one(
    start_server: StartServer, thermometer_repository: Path, tmp_path: Path
) -> None:
    repo = _repo_with(thermometer_repository, tmp_path, "broken")
    (repo / "broken" / "1" / "model.pt").write_bytes(b"not a TorchScript archive")
    server = start_server(repo, wait_ready=False)
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=server.url) as http:
        while "ready:" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert http.post(INFER, content=infer_body()).status_code == 200  # the good one serves
        ready = http.get("/v2/health/ready")
        assert ready.status_code == 503 and "'broken' failed to load" in ready.json()["error"]
        meta = http.get("/v2/models/broken")
        assert meta.status_code == 503 and "cannot load model 'broken'" in meta.json()["error"], meta.text
        assert http.get("/v2/models/broken/ready").status_code == 503
        index = {m["name"]: m for m in http.post("/v2/repository/index", content=b"{}").json()}
        assert index[MODEL]["state"] == "READY"
        assert index["broken"]["state"] == "UNAVAILABLE" and "model.pt" in index["broken"]["reason"]
        assert 'torchship_model_load_failed{model="broken"' in http.get("/metrics").text
    assert "model 'broken' is not available" in server.log()
    tolerant = start_server(repo, "--ready-with-failed-models")
    assert httpx.get(f"{tolerant.url}/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda c: c["outputs"].append({"name": "extra", "datatype": "FP32", "shape": [-1, 1]}), "returns 1 output(s)"),
        (lambda c: c["outputs"][0].update(shape=[-1, 2]), "has shape [1, 1] for a batch of 1"),
        (lambda c: c["outputs"][0].update(datatype="FP64"), "is FP32, config.json declares FP64"),
    ],
    ids=["extra-output", "wrong-shape", "wrong-dtype"],
)
def test_outputs_that_do_not_match_config_are_load_errors(
    start_server: StartServer, thermometer_repository: Path, tmp_path: Path, change, fragment: str
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(thermometer_repository, repo)
    path = repo / MODEL / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))
    server = start_server(repo, "--strict", wait_ready=False)
    assert server.proc is not None and server.proc.wait(timeout=60) == 1
    server.kill()
    assert fragment in server.log(), server.log()


def test_a_symlink_out_of_the_repository_is_refused(
    start_server: StartServer, thermometer_repository: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    outside = tmp_path / "outside"
    shutil.copytree(thermometer_repository / MODEL, outside)
    (repo / MODEL).symlink_to(outside)
    server = start_server(repo, wait_ready=False)
    deadline = time.monotonic() + 60
    while "ready:" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    r = httpx.get(f"{server.url}/v2/models/{MODEL}")
    assert r.status_code == 503 and "--follow-symlinks" in r.json()["error"], r.text
    followed = start_server(repo, "--follow-symlinks")
    assert httpx.post(f"{followed.url}{INFER}", content=infer_body()).status_code == 200


# --- the endpoints standard clients call ------------------------------------------------------


def test_config_stats_and_index(front) -> None:
    with httpx.Client(base_url=front.url) as http:
        before = http.get(f"/v2/models/{MODEL}/stats").json()["model_stats"][0]
        for v in range(5):
            assert http.post(INFER, content=infer_body(float(v))).status_code == 200
        stats = http.get(f"/v2/models/{MODEL}/versions/1/stats").json()["model_stats"][0]
        assert stats["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 5
        assert stats["inference_count"] >= before["inference_count"] + 5
        assert stats["inference_stats"]["success"]["ns"] > 0 and stats["last_inference"] > 0
        assert [s["name"] for s in http.get("/v2/models/stats").json()["model_stats"]] == [MODEL]
        config = http.get(f"/v2/models/{MODEL}/config").json()
        assert config["max_batch_size"] == 256
        assert config["input"] == [{"name": "t_u", "data_type": "TYPE_FP32", "dims": [1]}]
        assert config["output"][0]["name"] == "t_c"
        assert http.post("/v2/repository/index", content=b'{"ready": true}').json() == [
            {"name": MODEL, "version": "1", "state": "READY", "reason": ""}
        ]
        assert http.post("/v2/repository/index", content=b'{"inputs": []}').status_code == 400
        assert http.post(f"/v2/repository/models/{MODEL}/unload").status_code == 403
        extensions = http.get("/v2").json()["extensions"]
        assert {"model_configuration", "statistics", "model_repository"} <= set(extensions)
