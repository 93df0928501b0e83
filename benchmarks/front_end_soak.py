"""Run: .venv/bin/python benchmarks/front_end_soak.py --repository model_repository [--idle 5000 --slowloris 1000]

The front end under hostile connection load, measured as docs/soak.md reports it:

1. Starvation: `--idle` idle TCP connections and `--slowloris` connections trickling header bytes
   stay open for the whole measurement, while 100 sequential thermometer_mlp inferences (each on a
   fresh connection) and 100 liveness probes are timed. Run once with the idle and header timeouts
   above the measurement window (the server cannot pass by closing them), once with the defaults
   (the soak reopens what the server closes).
2. Memory: one client sends a 1 GiB header line; the server must answer 431 or close as soon as
   the limit is passed, and its RSS must grow by < 16 MB.
3. Fairness: `--fair-connections` keep-alive connections each send MLP requests in a closed loop
   for `--seconds`; per connection: completed requests and the longest wait.

Both processes raise RLIMIT_NOFILE to the hard limit. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import closed_loop
from closed_loop import raise_nofile, read_answer, request
from torchship.server_process import ServerProcess

MODEL = "thermometer_mlp"
BODY = json.dumps({"inputs": [{"name": "t_u", "shape": [1, 1], "datatype": "FP32", "data": [55.0]}]}).encode()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Hostiles:
    """Idle and slowloris connections held open by a separate process (as an attacker's would be, not this
    client's event loop: its 1,000 reconnects would otherwise delay the timed requests in the same loop);
    the ones the server closes are reopened."""

    def __init__(self, port: int, idle: int, slowloris: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._reopened = context.Value("q", 0)
        self._process = context.Process(
            target=_hold_all, args=(port, idle, slowloris, self._stop, self._reopened), daemon=True
        )

    @property
    def reopened(self) -> int:
        return int(self._reopened.value)

    async def start(self) -> None:
        self._process.start()
        await asyncio.sleep(3.0)  # all connected (200 at a time, 10 ms apart) and settled

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._process.join, 30)


def _hold_all(port: int, idle: int, slowloris: int, stop: Any, reopened: Any) -> None:
    raise_nofile()
    asyncio.run(_hold_until(port, idle, slowloris, stop, reopened))


async def _hold_until(port: int, idle: int, slowloris: int, stop: Any, reopened: Any) -> None:
    async def hold(trickle: bool) -> None:
        first = True
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                if not first:
                    with reopened.get_lock():
                        reopened.value += 1
                first = False
                if trickle:
                    writer.write(b"GET /v2/health/live HTTP/1.1\r\n")
                while True:
                    await asyncio.sleep(1.0)
                    if trickle:
                        writer.write(b"X")  # one header byte a second
                        await writer.drain()
                    elif writer.is_closing():
                        break
            except (ConnectionError, OSError):
                await asyncio.sleep(0.05)

    tasks = []
    for i in range(idle + slowloris):
        tasks.append(asyncio.create_task(hold(trickle=i >= idle)))
        if i % 200 == 0:
            await asyncio.sleep(0.01)  # do not overflow the listen backlog
    while not stop.is_set():
        await asyncio.sleep(0.1)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def timed(port: int, payload: bytes, n: int, spacing_s: float = 0.0) -> list[float]:
    out = []
    for _ in range(n):
        await asyncio.sleep(spacing_s)
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        assert await read_answer(reader) == 200
        out.append(time.perf_counter() - started)
        writer.close()
    return out


def p99(xs: list[float]) -> float:
    return sorted(xs)[min(len(xs) - 1, int(0.99 * len(xs)))] * 1e3


async def starvation(server: ServerProcess, idle: int, slowloris: int, window_s: float) -> dict:
    """100 inferences and 100 probes, spread over at least `window_s` (past the header timeout, the server closes
    the slowloris connections and the soak reopens them: `reopened` counts them)."""
    hostiles = Hostiles(server.port, idle, slowloris)
    await hostiles.start()
    started = time.perf_counter()
    spacing = window_s / 200
    infer = await timed(server.port, request(f"/v2/models/{MODEL}/infer", BODY, keep_alive=False), 100, spacing)
    live = await timed(server.port, request("/v2/health/live", keep_alive=False), 100, spacing)
    window = time.perf_counter() - started
    await hostiles.stop()
    return {
        "idle": idle,
        "slowloris": slowloris,
        "window_s": window,
        "reopened": hostiles.reopened,
        "infer_p50_ms": statistics.median(infer) * 1e3,
        "infer_p99_ms": p99(infer),
        "live_p50_ms": statistics.median(live) * 1e3,
        "live_p99_ms": p99(live),
    }


async def header_bomb(server: ServerProcess, total: int = 1 << 30) -> dict:
    before = rss(server.pid)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /v2/health/live HTTP/1.1\r\nX-Bomb: ")
    chunk = b"a" * (1 << 20)
    sent, status, peak = 0, None, before
    try:
        while sent < total:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            peak = max(peak, rss(server.pid))
            if reader.at_eof() or reader._buffer:  # an answer has arrived
                break
    except (ConnectionError, OSError):
        pass
    try:
        status = await asyncio.wait_for(read_answer(reader), 5)
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, ValueError):
        status = None
    writer.close()
    return {"sent_bytes_before_refusal": sent, "status": status, "rss_growth_mb": (peak - before) / 1e6}


async def fairness(server: ServerProcess, connections: int, seconds: float) -> dict:
    return await closed_loop.fairness(server.port, f"/v2/models/{MODEL}/infer", BODY, connections, seconds)


async def main_async(args: argparse.Namespace) -> dict:
    hard = raise_nofile()
    log = Path(args.log_dir)
    log.mkdir(parents=True, exist_ok=True)
    common = [
        "--device",
        "cpu",
        "--log-level",
        "warning",
        "--model",
        MODEL,
        "--max-connections",
        "19000",
        "--max-queue-size",
        "4096",
        *(["--intra-op-threads", str(args.intra_op_threads)] if args.intra_op_threads else []),
    ]
    result: dict = {"cpu": cpu_model(), "nofile_hard": hard}
    # 1a: timeouts above the window, so the hostile connections stay.
    long = ["--keep-alive-timeout-ms", "600000", "--header-timeout-ms", "600000"]
    with_long = ServerProcess(args.repository, *common, *long, log_path=log / "long.log").start()
    try:
        result["starvation_timeouts_above_window"] = await starvation(with_long, args.idle, args.slowloris, args.window)
        result["header_bomb_1GiB"] = await header_bomb(with_long)
    finally:
        with_long.stop()
    # 1b: default timeouts; the soak reopens what is closed. 3: fairness.
    default = ServerProcess(args.repository, *common, log_path=log / "default.log").start()
    try:
        result["starvation_default_timeouts"] = await starvation(default, args.idle, args.slowloris, args.window)
        result["fairness_c64"] = await fairness(default, 64, args.seconds)
        result["fairness"] = await fairness(default, args.fair_connections, args.seconds)
    finally:
        default.stop()
    f = result["fairness"]
    result["throughput_ratio_c_max_over_c64"] = f["req_per_s"] / result["fairness_c64"]["req_per_s"]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repository", type=Path, required=True, help="a model repository holding thermometer_mlp")
    p.add_argument("--idle", type=int, default=5000)
    p.add_argument("--slowloris", type=int, default=1000)
    p.add_argument("--fair-connections", type=int, default=1024)
    p.add_argument(
        "--window",
        type=float,
        default=15.0,
        help="seconds the starvation measurements span at least: above the default --header-timeout-ms (10 s), so "
        "the default run sees slowloris connections closed and reopened (default %(default)s)",
    )
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument(
        "--intra-op-threads",
        type=int,
        default=0,
        help="the server's --intra-op-threads (0: its default); make bench serves the MLP with 1",
    )
    p.add_argument("--log-dir", default="/tmp/torchship-soak")
    print(json.dumps(asyncio.run(main_async(p.parse_args())), indent=2))


if __name__ == "__main__":
    main()
