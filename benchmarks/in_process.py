"""The in-process limit: one artifact called in a loop through torchship._C, no HTTP.

Run as a child process by benchmarks/run.py, with the allocator torchship-server links preloaded
(LD_PRELOAD), so the limit and the server use the same malloc; prints one JSON line.

    .venv/bin/python benchmarks/in_process.py build/bench/repo_resnet18 resnet18 --shape 1,3,224,224
    python3 benchmarks/in_process.py build/bench/repo_resnet50 resnet50 --shape 1,3,224,224 --device cuda \
        --cudnn-benchmark --precision fp16 --channels-last --max-batch-size 64

Inputs start on the CPU, as a server's do, so a GPU's figure includes the copies to and from it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from torchship import runtime


def measure(
    repo: str,
    model: str,
    shape: tuple[int, ...],
    seconds: float,
    batches: list[int],
    repeats: int,
    **runtime_options: object,
) -> dict:
    """items/s at each batch size, the median of `repeats` windows like every server point (the best batch size
    is the limit), and the batch-1 call's p50."""
    with runtime.Runtime(repo, models=[model], **runtime_options) as rt:
        m = rt.model(model)
        x1 = torch.randn(shape)
        for _ in range(10):
            m.infer(x1)
        lat = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            m.infer(x1)
            lat.append(time.perf_counter() - t0)
        windows: dict[int, list[float]] = {b: [] for b in batches if b <= m.max_batch_size}
        for _ in range(repeats):  # rounds over the batch sizes, so a slow spell on the VM hits them alike
            for batch, rates_at in windows.items():
                x = torch.randn((batch, *shape[1:]))
                m.infer(x)
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    m.infer(x)
                    n += batch
                rates_at.append(n / (time.perf_counter() - t0))
        rates = {b: statistics.median(r) for b, r in windows.items()}
    best = max(rates, key=lambda b: rates[b])
    return {
        "batch": best,
        "items_per_s": rates[best],
        "items_per_s_by_batch": rates,
        "p50_ms_batch1": statistics.median(lat) * 1e3,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("repository")
    p.add_argument("model")
    p.add_argument("--shape", required=True, help="one request's input shape, e.g. 1,3,224,224")
    p.add_argument("--seconds", type=float, default=2.5, help="per batch size (default %(default)s)")
    p.add_argument("--batches", default="1,4,8,16,32,64", help="batch sizes to try (default %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default 0: torch's default)")
    p.add_argument("--repeats", type=int, default=3, help="windows per batch size; the median counts (default 3)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cudnn-benchmark", action="store_true")
    p.add_argument("--max-batch-size", type=int)
    p.add_argument("--precision", default="exported", help="exported, fp32, fp16 or bf16")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--format", default="auto", help="auto, torchscript or pt2 (docs/variants.md)")
    a = p.parse_args()
    shape = tuple(int(s) for s in a.shape.split(","))
    batches = [int(b) for b in a.batches.split(",")]
    runtime.configure(intra_op_threads=a.threads, cudnn_benchmark=a.cudnn_benchmark)  # as torchship-server does
    options = {"device": a.device, "max_batch_size": a.max_batch_size, "format": a.format}
    options |= {"precision": a.precision, "channels_last": a.channels_last}
    print(json.dumps(measure(a.repository, a.model, shape, a.seconds, batches, a.repeats, **options)))


if __name__ == "__main__":
    main()
