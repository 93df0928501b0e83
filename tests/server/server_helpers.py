"""Shared by the server tests, which import it by name (pytest puts tests/server on sys.path)."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from torchship.server_process import ServerProcess

# The ``start_server`` fixture (conftest.py): ``start_server(repository, *flags, log_level=..., wait_ready=...)``.
StartServer = Callable[..., ServerProcess]


def metric(server: ServerProcess, sample: str) -> float:
    """One sample's value from the server's /metrics, e.g. ``metric(server, 'torchship_ready')``."""
    text = httpx.get(f"{server.url}/metrics").text
    m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert m, f"{sample} not in /metrics"
    return float(m.group(1))
