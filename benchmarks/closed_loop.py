"""Per-connection closed-loop load, for the fairness figures of `make bench` and docs/soak.md.

wrk reports totals only: requests on connections the server never reads are simply not counted, so a
server that serves 72 of 1,024 connections looks fine. Here every keep-alive connection sends one
request, waits for its answer, and repeats; per connection we keep the completed count and the longest
wait. A light asyncio client: on 2 cores it, not the server, bounds the absolute rates it reports.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import time


def raise_nofile() -> int:
    """Raises this process's open-files limit to the hard limit (1,024 connections need more than 1,024)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def request(path: str, body: bytes = b"", keep_alive: bool = True) -> bytes:
    method = "POST" if body else "GET"
    conn = "" if keep_alive else "Connection: close\r\n"
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{conn}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def read_answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def fairness(port: int, path: str, body: bytes, connections: int, seconds: float) -> dict:
    """`connections` keep-alive connections in a closed loop for `seconds`: totals and the per-connection spread."""
    counts = [0] * connections
    worst = [0.0] * connections
    errors = [0] * connections
    payload = request(path, body)
    stop_at = time.perf_counter() + seconds

    async def loop(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(payload)
            status = await read_answer(reader)
            worst[k] = max(worst[k], time.perf_counter() - started)
            counts[k] += 1
            errors[k] += status != 200
        writer.close()

    await asyncio.gather(*(loop(k) for k in range(connections)))
    med = statistics.median(counts)
    return {
        "connections": connections,
        "seconds": seconds,
        "requests": sum(counts),
        "errors": sum(errors),
        "req_per_s": sum(counts) / seconds,
        "median_per_connection": med,
        "min_per_connection": min(counts),
        "min_over_median": min(counts) / med if med else 0.0,
        "max_wait_s": max(worst),
    }
