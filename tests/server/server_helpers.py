"""Shared by the server tests, which import it by name (pytest puts tests/server on sys.path)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h11
import httpx
import torch

from torchship.export.formats import torchscript_deprecation_noted
from torchship.server_process import ServerProcess

# The test operator library (cpp/tests/test_ops.cpp), built by tools/bootstrap.sh: torchship_test::scale_add
# and torchship_test::sleep_ms.
TEST_OPS = Path(__file__).resolve().parents[2] / "build" / "native" / "cpp" / "tests" / "libtorchship_test_ops.so"

# The ``start_server`` fixture (conftest.py): ``start_server(repository, *flags, log_level=..., wait_ready=...)``.
StartServer = Callable[..., ServerProcess]


def metric(server: ServerProcess, sample: str) -> float:
    """One sample's value from the server's /metrics, e.g. ``metric(server, 'torchship_ready')``."""
    text = httpx.get(f"{server.url}/metrics").text
    m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert m, f"{sample} not in /metrics"
    return float(m.group(1))


def save_scripted(
    repo: Path,
    name: str,
    module: torch.nn.Module,
    inputs: list[tuple[str, str, list[int]]],
    outputs: list[tuple[str, str, list[int]]],
    **config: Any,
) -> Path:
    """A hand-made repository entry (what a user's own tooling might write): a scripted module and its
    config.json, tensors given as (name, datatype, shape without the batch dimension)."""

    def spec(n: str, dtype: str, shape: list[int]) -> dict[str, Any]:
        return {"name": n, "datatype": dtype, "shape": [-1, *shape], "example_shape": [1, *shape]}

    (repo / name / "1").mkdir(parents=True)
    with torchscript_deprecation_noted():
        torch.jit.script(module).save(str(repo / name / "1" / "model.pt"))
    doc = {
        "name": name,
        "max_batch_size": 4,
        "inputs": [spec(*i) for i in inputs],
        "outputs": [spec(*o) for o in outputs],
    }
    (repo / name / "config.json").write_text(json.dumps(doc | config))
    return repo / name


def sigterm_while_draining(server: ServerProcess, trickling: int = 1, wait_s: float = 10.0) -> tuple[int | None, float]:
    """Opens one idle keep-alive connection and `trickling` ones that send a header byte every 0.2 s, sends
    SIGTERM and waits for the exit; returns the exit code (None: still running after ``wait_s``) and the
    seconds from the signal."""
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    trickles = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(trickling)]
    stop = threading.Event()

    def keep_trickling() -> None:
        try:
            for s in trickles:
                s.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
            while not stop.wait(0.2):
                for s in trickles:
                    s.sendall(b"X")
        except OSError:
            return

    t = threading.Thread(target=keep_trickling, daemon=True)
    t.start()
    time.sleep(0.3)  # every connection is a session in the server, the trickling ones halfway through their headers
    assert server.proc is not None
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        code: int | None = server.proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        code = None
    elapsed = time.monotonic() - started
    stop.set()
    t.join()
    for s in [idle, *trickles]:
        s.close()
    return code, elapsed


def http_request(method: str, target: str, body: bytes = b"", *headers: str) -> bytes:
    head = [f"{method} {target} HTTP/1.1", "Host: x", *headers]
    if body and not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def read_responses(
    s: socket.socket, count: int | None = None, timeout: float = 10.0
) -> tuple[list[tuple[int, bytes]], bool]:
    """Reads answers with h11 until `count` arrived or the server closed; returns them and whether it closed."""
    conn = h11.Connection(h11.CLIENT)
    out: list[tuple[int, bytes]] = []
    status, body = 0, b""
    deadline = time.monotonic() + timeout
    closed = False
    while count is None or len(out) < count:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            s.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                data = b""
                if time.monotonic() >= deadline:
                    break
            if not data:
                closed = True
                break
            conn.receive_data(data)
        elif isinstance(event, h11.Response):
            status, body = event.status_code, b""
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append((status, body))
            if conn.their_state is h11.MUST_CLOSE:
                closed = closes(s, deadline)
                break
            # h11 handles one request/response pair at a time: start the next cycle by hand.
            conn = _next_cycle(conn)
        elif isinstance(event, h11.ConnectionClosed):
            closed = True
            break
    return out, closed


def _next_cycle(conn: h11.Connection) -> h11.Connection:
    leftover = conn.trailing_data[0]
    fresh = h11.Connection(h11.CLIENT)
    fresh.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    fresh.send(h11.EndOfMessage())
    if leftover:
        fresh.receive_data(leftover)
    return fresh


def closes(s: socket.socket, deadline: float) -> bool:
    """True when the server closes the connection (EOF or reset) before the deadline."""
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(deadline - time.monotonic(), 0.01))
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False
