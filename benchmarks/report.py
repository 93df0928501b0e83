"""Turns benchmarks/run.py's measurements into docs/benchmarks.md and docs/benchmarks.png."""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _plot(results: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["in_process"])
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for server in ("torchship", "flask"):
            for protocol, style in (("json", "-"), ("binary", "--")):
                pts = [
                    p
                    for p in results["points"]
                    if p["model"] == model and p["server"] == server and p["protocol"] == protocol
                ]
                if pts:
                    ax.plot(
                        [p["concurrency"] for p in pts],
                        [p["rps"] for p in pts],
                        style,
                        marker="o",
                        label=f"{server} {protocol}",
                    )
        limit = results["in_process"][model]["items_per_s"]
        ax.axhline(limit, color="grey", linestyle=":", label=f"in-process limit ({limit:,.0f}/s)")
        ax.set(title=model, xlabel="concurrent connections", ylabel="requests / s", xscale="log", yscale="log")
        ax.set_xticks([1, 4, 16, 64], labels=["1", "4", "16", "64"])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def write_report(results: dict, args: argparse.Namespace, out: Path) -> None:
    png = out.with_suffix(".png")
    _plot(results, png)
    lines = [
        "# Benchmarks",
        "",
        "Every figure below was measured by one run of `make bench` "
        f"(`.venv/bin/python benchmarks/run.py --duration {args.duration} --repeats {args.repeats}`); "
        "each point is the median of the repeats.",
        "",
        f"- Machine: {os.cpu_count()} CPUs ({_cpu_model()}), {platform.system()} {platform.release()}, "
        f"torch {torch.__version__}. Load generator, servers and model share these cores.",
        "- Load: `wrk` with keep-alive, one single-item request per call (`benchmarks/wrk_infer.lua`), "
        "JSON or the binary tensor extension.",
        "- torchship-server settings: "
        + "; ".join(f"{m}: `{s}`" for m, s in results["settings"].items())
        + " (defaults otherwise: dynamic batching with no queue delay).",
        "- Flask baseline: `benchmarks/flask_baseline.py`, the book's chapter 15 way (TorchScript file, "
        "`torch.no_grad`, Flask's threaded server), same protocol and payloads.",
        "- In-process limit: the same artifact called in a loop through `torchship._C` at the best batch size.",
        "",
        f"![throughput]({png.name})",
        "",
    ]
    for model, limit in results["in_process"].items():
        lines += [
            f"## {model}",
            "",
            f"In-process limit: **{limit['items_per_s']:,.0f} items/s** at batch {limit['batch']}; "
            f"batch-1 call p50 {limit['p50_ms_batch1']:.3f} ms. "
            f"Cold start (spawn → ready, median of 3): {results['cold_start_s'][model]:.2f} s.",
            "",
            "| server | protocol | conc. | req/s | % of in-process | p50 ms | p99 ms "
            "| server CPU ms/req | wrk CPU ms/req | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p in results["points"]:
            if p["model"] != model:
                continue
            lines.append(
                f"| {p['server']} | {p['protocol']} | {p['concurrency']} | {p['rps']:,.0f} | "
                f"{100 * p['rps'] / limit['items_per_s']:.0f}% | {p['p50_ms']:.3f} | {p['p99_ms']:.3f} | "
                f"{p['server_cpu_ms_per_req']:.3f} | {p['wrk_cpu_ms_per_req']:.3f} | {p['errors']} |"
            )
        lines.append("")
    out.write_text("\n".join(lines) + "\n")
