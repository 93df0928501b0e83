"""Soak and overload runs for torchship-server (separate commands, never in CI).

    .venv/bin/python benchmarks/soak.py            # both; writes docs/soak.md

Soak: >= 100,000 keep-alive requests to the thermometer MLP in ten rounds, resident memory (VmRSS)
sampled after each round; it must stay flat after warm-up.
Overload: ResNet-18 with a tiny queue (--max-queue-size 2) at 64 connections: the server answers 503
(+ Retry-After) instead of growing, memory stays bounded, and afterwards a request succeeds at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from run import ROOT, WORK, prepare_repository, run_wrk, single_repo, write_payloads
from torchship.server_process import ServerProcess


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def soak(repo: Path, rounds: int, seconds: int) -> list[str]:
    payload = write_payloads(repo, "thermometer_mlp")["json"]
    lines = [
        "## Soak: thermometer_mlp, JSON, 16 keep-alive connections",
        "",
        "| round | requests (total) | errors | req/s | RSS MB |",
        "|---:|---:|---:|---:|---:|",
    ]
    with ServerProcess(single_repo(repo, "thermometer_mlp"), log_path=WORK / "soak.log") as srv:
        total = 0
        lines.append(f"| start | 0 | 0 | — | {rss_mb(srv.pid):.1f} |")
        for i in range(1, rounds + 1):
            r = run_wrk(srv.url, "thermometer_mlp", payload, 16, seconds)
            total += r["requests"]
            errors = r["errors_status"] + r["errors_connect"] + r["errors_read"] + r["errors_timeout"]
            rate = r["requests"] / (r["duration_us"] / 1e6)
            lines.append(f"| {i} | {total:,} | {errors} | {rate:,.0f} | {rss_mb(srv.pid):.1f} |")
            print(lines[-1], flush=True)
    return lines


def memory_verdict(rss: list[float]) -> str:
    """Whether resident memory levelled off over the later rounds (judged from the numbers, not assumed)."""
    later = rss[len(rss) // 2 :]
    spread = max(later) - min(later)
    if spread <= 0.01 * later[-1]:
        return f"over the last {len(later)} rounds it moved by {spread:.1f} MB (< 1 %): flat under sustained overload."
    per_round = (later[-1] - later[0]) / max(len(later) - 1, 1)
    return f"over the last {len(later)} rounds it still grew by {per_round:.1f} MB per round: not shown to be flat."


def overload(repo: Path, seconds: int, rounds: int) -> list[str]:
    payload = write_payloads(repo, "resnet18")["binary"]
    lines = ["## Overload: resnet18, binary, 64 connections, --max-queue-size 2", ""]
    args = ("--max-queue-size", "2", "--intra-op-threads", "2")
    with ServerProcess(single_repo(repo, "resnet18"), *args, log_path=WORK / "overload.log") as srv:
        before = rss_mb(srv.pid)
        rss = []
        totals = {"requests": 0, "errors_status": 0, "errors_connect": 0, "errors_read": 0, "errors_timeout": 0}
        for _ in range(rounds):  # memory must level off, not grow with the number of refused requests
            r = run_wrk(srv.url, "resnet18", payload, 64, seconds)
            totals = {k: totals[k] + r[k] for k in totals}
            rss.append(rss_mb(srv.pid))
        r = totals
        metrics = httpx.get(f"{srv.url}/metrics").text
        overloaded = [ln for ln in metrics.splitlines() if "overload" in ln and not ln.startswith("#")]
        # Recovery as a client sees it: retry after the server's Retry-After until the queue has drained.
        body, headers = payload[0].read_bytes(), {"Inference-Header-Content-Length": payload[2]}
        t0, attempts = time.perf_counter(), 0
        while True:
            attempts += 1
            resp = httpx.post(f"{srv.url}/v2/models/resnet18/infer", content=body, headers=headers, timeout=30)
            if resp.status_code != 503 or attempts == 10:
                break
            time.sleep(float(resp.headers.get("Retry-After", "1")))
        after_s = time.perf_counter() - t0
        ok = r["requests"] - r["errors_status"]
        lines += [
            f"- {r['requests']:,} responses in {rounds} x {seconds} s: {ok:,} answered 200, "
            f"{r['errors_status']:,} refused "
            f"(503 + Retry-After), {r['errors_connect'] + r['errors_read'] + r['errors_timeout']} transport errors.",
            f"- Resident memory: {before:.1f} MB before; after each {seconds} s round: "
            + ", ".join(f"{m:.1f}" for m in rss)
            + " MB. The first round sets the working set (64 connection threads each holding a 600 KB body, the "
            "allocator's per-thread caches); " + memory_verdict(rss),
            f"- Metrics: `{'; '.join(overloaded) or '(none)'}`",
            "- Goodput: wrk ignores Retry-After and resends at once; its sending and the connection threads' "
            "receiving (600 KB per request, on the same 2 cores) leave the model little CPU, so the 200s above are "
            "what it still got done. The server refuses before decoding a body (no JSON parse for a refused "
            "request), not before receiving it. Clients that honour Retry-After "
            "(`torchship.client.Client(..., overload_retries=N)`) avoid the storm.",
            f"- Recovery: a client honouring Retry-After got {resp.status_code} after {attempts} attempt(s), "
            f"{after_s:.2f} s after the load stopped.",
        ]
        print("\n".join(lines), flush=True)
        assert resp.status_code == 200 and np.isfinite(after_s)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seconds", type=int, default=6, help="per soak round (default %(default)s)")
    p.add_argument("--overload-rounds", type=int, default=6, help="10 s overload rounds (default %(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "soak.md")
    args = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    repo = prepare_repository(["thermometer_mlp", "resnet18"])
    lines = [
        "# Soak and overload",
        "",
        f"Measured by `.venv/bin/python benchmarks/soak.py` "
        f"(--rounds {args.rounds} --seconds {args.seconds} --overload-rounds {args.overload_rounds}) on the "
        "benchmark machine of docs/benchmarks.md.",
        "",
    ]
    lines += [*soak(repo, args.rounds, args.seconds), "", *overload(repo, 10, args.overload_rounds)]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
