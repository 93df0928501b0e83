"""Run: .venv/bin/python -m pytest tests/server/test_load.py -q

Under concurrent load the dynamic batcher forms batches larger than one, and
every caller still gets the rows of its own request. SIGTERM with requests in
flight loses none of them, and the server exits 0.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from server_helpers import StartServer, http_request, metric, read_responses

from torchship import tolerance
from torchship.client import Client, ServerError

MODEL = "thermometer_linear"
LABELS = f'model="{MODEL}",version="1"'


def test_concurrent_callers_get_their_own_rows_in_shared_batches(
    start_server: StartServer, thermometer_repository: Path, thermometer_eager: torch.nn.Module
) -> None:
    server = start_server(thermometer_repository, "--max-queue-delay-us", "2000", log_level="warning")
    clients, per_client = 16, 60
    failures: list[str] = []

    def work(k: int) -> None:
        with Client(server.url) as client:
            for i in range(per_client):
                rows = 1 + (k + i) % 3  # requests of 1-3 rows share batches
                x = torch.arange(rows, dtype=torch.float32).reshape(rows, 1) + 1000.0 * k + i
                got = client.infer(MODEL, x, binary_inputs=i % 2 == 1, binary_outputs=i % 3 == 0)["t_c"]
                with torch.no_grad():
                    want = thermometer_eager(x)
                c = tolerance.compare(got, want, tolerance.tolerance("server"))
                if not c.ok:
                    failures.append(f"client {k} request {i}: {c}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    assert metric(server, f"torchship_inference_success_total{{{LABELS}}}") == clients * per_client
    batches = metric(server, f"torchship_batch_size_count{{{LABELS}}}")
    single = metric(server, f'torchship_batch_size_bucket{{{LABELS},le="1"}}')
    rows = metric(server, f"torchship_batch_size_sum{{{LABELS}}}")
    shared = batches - single
    print(f"{clients * per_client} requests, {rows:.0f} rows in {batches:.0f} batches ({shared:.0f} of them > 1 row)")
    sent = sum(1 + (k + i) % 3 for k in range(clients) for i in range(per_client))
    assert rows == sent, f"{rows:.0f} rows went through batches, {sent} were sent"
    assert batches < clients * per_client  # requests shared batches
    assert server.stop() == 0


def instance_count(server, model: str = MODEL) -> int:
    return httpx.get(f"{server.url}/v2/models/{model}/config").json()["instance_group"][0]["count"]


def test_a_small_model_gets_one_instance_per_io_thread(start_server: StartServer, thermometer_repository: Path) -> None:
    # Single-threaded kernels and a batch-1 call of microseconds: the model runs on the I/O threads, one
    # instance each, so no thread waits for another's call (docs/benchmarks.md, "Why 4 connections").
    small = ("--intra-op-threads", "1", "--io-threads", "3")
    assert instance_count(start_server(thermometer_repository, *small, log_level="warning")) == 3
    # An explicit --instance-count wins; and with multi-threaded kernels the model runs on its workers.
    assert instance_count(start_server(thermometer_repository, *small, "--instance-count", "1")) == 1
    assert instance_count(start_server(thermometer_repository, "--intra-op-threads", "2", "--io-threads", "3")) == 1


def test_requests_read_in_one_round_share_a_batch_and_keep_their_own_rows(
    start_server: StartServer, thermometer_repository: Path, thermometer_eager: torch.nn.Module
) -> None:
    # One I/O thread, so one instance: requests that arrive on several connections while it is busy are
    # read in one round and run as one batch on that thread (HttpApi::end_round).
    server = start_server(thermometer_repository, "--intra-op-threads", "1", "--io-threads", "1", log_level="warning")
    connections, rounds = 8, 40
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(connections)]
    try:
        for s in sockets:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for r in range(rounds):
            values = [1000.0 * r + k for k in range(connections)]
            for s, v in zip(sockets, values, strict=True):
                body = json.dumps({"inputs": [{"name": "t_u", "shape": [1, 1], "datatype": "FP32", "data": [v]}]})
                s.sendall(http_request("POST", f"/v2/models/{MODEL}/infer", body.encode()))
            for s, v in zip(sockets, values, strict=True):
                ((status, answer),), _closed = read_responses(s, count=1)
                assert status == 200, answer
                got = torch.tensor(json.loads(answer)["outputs"][0]["data"]).reshape(1, 1)
                with torch.no_grad():
                    tolerance.assert_close(
                        got, thermometer_eager(torch.tensor([[v]])), tolerance.tolerance("server"), f"value {v}"
                    )
    finally:
        for s in sockets:
            s.close()
    requests = connections * rounds
    assert metric(server, f"torchship_inference_success_total{{{LABELS}}}") == requests
    assert metric(server, f"torchship_batch_size_sum{{{LABELS}}}") == requests
    batches = metric(server, f"torchship_batch_size_count{{{LABELS}}}")
    print(f"{requests} requests on {connections} connections ran in {batches:.0f} batches")
    assert batches < requests  # some rounds held several
    assert server.stop() == 0


def test_sigterm_finishes_requests_in_flight(
    start_server: StartServer, thermometer_repository: Path, thermometer_eager: torch.nn.Module
) -> None:
    # Requests wait up to 10 s in the queue for company, so all n are caught in flight however slowly the
    # threads start; shutdown stops the waiting at once.
    server = start_server(thermometer_repository, "--max-queue-delay-us", "10000000")
    n = 16
    results: dict[int, torch.Tensor | BaseException] = {}

    def send(k: int) -> None:
        try:
            with Client(server.url) as client:
                results[k] = client.infer(MODEL, torch.tensor([[float(k)]]))["t_c"]
        except (httpx.HTTPError, ServerError) as e:
            results[k] = e

    threads = [threading.Thread(target=send, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while metric(server, f"torchship_inflight_requests{{{LABELS}}}") < n:
        assert time.monotonic() < deadline, "requests never got in flight"
        # Paces the poll; the requests are what we are waiting for.
        threads[0].join(timeout=0.005)
    assert server.proc is not None
    server.proc.send_signal(15)  # SIGTERM while all n wait in the batcher's queue
    for t in threads:
        t.join()
    assert server.proc.wait(timeout=30) == 0, server.log()
    lost = {k: r for k, r in results.items() if not isinstance(r, torch.Tensor)}
    assert not lost and len(results) == n, lost
    with torch.no_grad():
        for k, got in results.items():
            tolerance.assert_close(
                got, thermometer_eager(torch.tensor([[float(k)]])), tolerance.tolerance("server"), f"request {k}"
            )
    assert "draining" in server.log() and "stopped" in server.log()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v2/health/live")
