"""Run: .venv/bin/python benchmarks/ab_servers.py --old OLD_BINARY [--new NEW_BINARY] [--rounds 5]

A/B of two torchship-server binaries (e.g. a build of main before a change, and this one) on the same
machine in one run: per model, the two servers take turns (old, new, old, new, ...) for `--rounds`
rounds, each round measuring every protocol and concurrency with wrk (the payloads and wrk script of
benchmarks/run.py); prints the median req/s per binary and the new/old ratio, and writes them as JSON.
Both servers get the same flags: `--intra-op-threads` as `make bench` sets it (or as given), nothing else.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run import WORK, prepare_repository, run_wrk, single_repo, write_payloads
from torchship.server_process import ServerProcess, server_binary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", type=Path, required=True, help="the baseline binary")
    p.add_argument("--new", type=Path, default=None, help="default: this checkout's torchship-server")
    p.add_argument("--models", default="thermometer_mlp,resnet18")
    p.add_argument("--protocols", default="json,binary")
    p.add_argument("--connections", default="1,4,16,64")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=3)
    p.add_argument(
        "--intra-op-threads", help="both servers' --intra-op-threads (default: make bench's, 2 for ResNet-18, else 1)"
    )
    p.add_argument("--out", type=Path, default=WORK / "ab_servers.json")
    args = p.parse_args()
    binaries = {"old": args.old, "new": args.new or server_binary()}
    levels = [int(c) for c in args.connections.split(",")]
    protocols = args.protocols.split(",")
    WORK.mkdir(parents=True, exist_ok=True)
    models = args.models.split(",")
    repo = prepare_repository(models, ["exported"])
    summary: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            one = single_repo(repo, model)
            payloads = write_payloads(repo, model)
            threads = args.intra_op_threads or ("2" if model == "resnet18" else "1")
            runs: dict[tuple[str, str, int], list[float]] = {}
            for round_ in range(args.rounds):
                for name, binary in binaries.items():
                    server = ServerProcess(
                        one, "--device", "cpu", "--log-level", "warning", "--intra-op-threads", threads,
                        log_path=Path(tmp) / f"{name}.log",
                    )  # fmt: skip
                    server.cmd[0] = str(binary)
                    with server.start():
                        for protocol in protocols:
                            for c in levels:
                                r = run_wrk(server.url, model, payloads[protocol], c, args.seconds)
                                runs.setdefault((name, protocol, c), []).append(
                                    r["requests"] / (r["duration_us"] / 1e6)
                                )
                print(f"{model}: round {round_ + 1}/{args.rounds} done", flush=True)
            for protocol in protocols:
                for c in levels:
                    old = statistics.median(runs[("old", protocol, c)])
                    new = statistics.median(runs[("new", protocol, c)])
                    key = f"{model} {protocol} c={c}"
                    summary[key] = {
                        "old_req_s": old,
                        "new_req_s": new,
                        "ratio": new / old,
                        "old_rounds": runs[("old", protocol, c)],
                        "new_rounds": runs[("new", protocol, c)],
                    }
                    print(f"  {key:<32} old {old:9.1f}  new {new:9.1f}  new/old {new / old:.2f}", flush=True)
    result = {"rounds": args.rounds, "seconds": args.seconds, "old": str(args.old), "by_point": summary}
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
