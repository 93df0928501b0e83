"""Run: .venv/bin/python benchmarks/ab_servers.py --repository REPO --old OLD_BINARY [--new NEW_BINARY]

A/B of two torchship-server binaries (e.g. a build of main before a change, and this one) on the same
machine in one run: wrk against each, in interleaved rounds, at several concurrencies; prints the
median req/s per binary and concurrency and the new/old ratio. JSON requests to `--model`.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

from torchship.server_process import ServerProcess, server_binary

LUA = """wrk.method = "POST"
wrk.body = '{"inputs":[{"name":"t_u","shape":[1,1],"datatype":"FP32","data":[55.0]}]}'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(url: str, connections: int, seconds: int, script: Path) -> float:
    threads = min(connections, 2)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repository", type=Path, required=True)
    p.add_argument("--model", default="thermometer_mlp")
    p.add_argument("--old", type=Path, required=True, help="the baseline binary")
    p.add_argument("--new", type=Path, default=None, help="default: this checkout's torchship-server")
    p.add_argument("--connections", default="1,4,16,64")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=5)
    args = p.parse_args()
    binaries = {"old": args.old, "new": args.new or server_binary()}
    levels = [int(c) for c in args.connections.split(",")]
    results: dict[str, dict[int, list[float]]] = {k: {c: [] for c in levels} for k in binaries}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "infer.lua"
        script.write_text(LUA)
        for _ in range(args.rounds):
            for name, binary in binaries.items():
                server = ServerProcess(
                    args.repository, "--device", "cpu", "--log-level", "warning", log_path=Path(tmp) / f"{name}.log"
                )
                server.cmd[0] = str(binary)
                server.start()
                try:
                    url = f"{server.url}/v2/models/{args.model}/infer"
                    for c in levels:
                        results[name][c].append(wrk(url, c, args.seconds, script))
                finally:
                    server.stop()
    summary = {
        c: {
            "old_req_s": statistics.median(results["old"][c]),
            "new_req_s": statistics.median(results["new"][c]),
            "ratio": statistics.median(results["new"][c]) / statistics.median(results["old"][c]),
        }
        for c in levels
    }
    print(json.dumps({"rounds": args.rounds, "seconds": args.seconds, "by_connections": summary}, indent=2))


if __name__ == "__main__":
    main()
