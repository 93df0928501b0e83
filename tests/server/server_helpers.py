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
