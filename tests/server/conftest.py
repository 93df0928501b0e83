"""Fixtures for the server tests: torchship-server processes on loopback, port 0, stopped with SIGTERM.

Starting and stopping goes through torchship.server_process (the port from the
server's stdout line, readiness polled on /v2/health/ready, bounded waits).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_helpers import StartServer

from torchship.server_process import ServerProcess


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Starts servers for one test: ``start_server(repository, "--max-batch-size", "8", ...)``; kills leftovers."""
    started: list[ServerProcess] = []

    def start(repository: Path, *args: str, log_level: str = "info", wait_ready: bool = True) -> ServerProcess:
        server = ServerProcess(
            repository,
            "--device",
            "cpu",
            "--log-level",
            log_level,
            *args,
            log_path=tmp_path / f"server{len(started)}.log",
        )
        started.append(server)
        return server.start(wait_ready=wait_ready)

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="module")
def thermometer_server(
    thermometer_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server on the thermometer repository, shared by a test module."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    server = ServerProcess(thermometer_repository, "--device", "cpu", log_path=log).start()
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def http(thermometer_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=thermometer_server.url, timeout=30.0) as client:
        yield client
