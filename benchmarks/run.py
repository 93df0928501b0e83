"""torchship-server vs the book's Flask baseline vs the in-process limit, measured side by side.

    make bench                                   # everything, medians of 3 runs (ResNet-18: fp32, bf16-cl, int8;
                                                 # the chapter 8 Net trained on digits: fp32, int8 with accuracy)
    .venv/bin/python benchmarks/run.py --models resnet18 --protocols binary,image --repeats 1 --skip-flask \
        --skip-allocators --work-dir /tmp/bench --out /tmp/image.md         # the image route beside tensors
    .venv/bin/python benchmarks/run.py --duration 3 --repeats 1 --models thermometer_mlp   # a quick look
    .venv/bin/python benchmarks/run.py --models resnet18 --concurrency 16 --skip-flask --skip-allocators \
        --server-arg=--max-queue-delay-us=2000 --out /tmp/ab.md                     # an A/B of one setting

    # on a GPU machine (benchmarks/gpu.sh bench): ResNet-50 fp32 and fp16 channels_last
    python3 benchmarks/run.py --device cuda --models resnet50 --variants fp32,fp16-cl --max-batch-size 64 \
        --skip-flask --out docs/benchmarks-gpu.md

Load comes from wrk (a native generator, light enough to share the 2 cores; its CPU is reported too).
For image models (ResNet-18) the image route is measured beside the tensor routes: scikit-learn's china.jpg
(427x640) POSTed as it is to /v2/models/{m}/image, which decodes, preprocesses and answers the top-5.
Writes docs/benchmarks.md (tables, machine, settings, commands) and docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import httpx
import numpy as np
import torch

from torchship.client import padded_header
from torchship.server_process import ServerProcess, server_binary

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORK = ROOT / "build" / "bench"
CONCURRENCY = (1, 4, 16, 64)
# Connections for the per-connection fairness points (closed_loop.py), on the MLP: wrk reports totals only.
FAIRNESS_CONNECTIONS = (64, 256, 1024)
# model -> one request's input shape (the input's name comes from config.json)
MODELS = {
    "thermometer_mlp": (1, 1),
    "resnet18": (1, 3, 224, 224),
    "resnet50": (1, 3, 224, 224),
    "digits_net": (1, 3, 32, 32),
}
DEFAULT_MODELS = "thermometer_mlp,resnet18,digits_net"  # the CPU benchmark; ResNet-50 is for GPUs (benchmarks/gpu.sh)
# Models benchmarked trained, so that int8's held-out accuracy means something: the training command (the
# chapter 8 Net on scikit-learn's digits, a few seconds) and the export-time variants each gets.
TRAINED = {"digits_net": ["train", "digits-net", "--epochs", "8"]}
# A run variant: the precision floating math runs in ("exported": as exported), "-cl" for channels_last.
PRECISIONS = ("exported", "fp32", "fp16", "bf16", "int8")
# Run variants made at export for ResNet-18 on the CPU (docs/variants.md): the server and in-process pick
# model.bf16-cl.pt2 and model.int8.pt from config.json instead of converting model.pt at load.
EXPORT_VARIANTS = ("bf16-cl", "int8")
VARIANTS_MADE_FOR = {"resnet18": EXPORT_VARIANTS, "digits_net": ("int8",)}
# The image route's request: a real photo of a common size, sent as it is (benchmarks/wrk_infer.lua POSTs it).
IMAGE_SAMPLE = "china.jpg"


def export_variant_flags(variant: str, model: str = "resnet18") -> list[str]:
    """`torchship export` flags that make one of EXPORT_VARIANTS."""
    if variant == "int8" and model in TRAINED:  # calibrated on its training split, checked on the held-out one
        return ["--quantize", "int8", "--calibration", "dataset"]
    if variant == "int8":  # ImageNet is not here: crops of scikit-learn's sample photos (docs/quantization.md)
        return ["--quantize", "int8", "--calibration", str(WORK / "calibration")]
    return ["--variants", variant]


def variant_flags(variant: str) -> list[str]:
    """The flags of a variant such as fp16-cl; torchship-server and benchmarks/in_process.py take the same."""
    precision, _, layout = variant.partition("-")
    if precision not in PRECISIONS or layout not in ("", "cl"):
        raise SystemExit(f"bad variant {variant!r}: expected one of {', '.join(PRECISIONS)}, optionally with -cl")
    server = [] if precision == "exported" else ["--precision", precision]
    return server + (["--channels-last"] if layout else [])


@dataclass
class Point:
    server: str
    model: str
    protocol: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms_per_req: float
    wrk_cpu_ms_per_req: float
    errors: int


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, cwd=ROOT)


def _up_to_date(model_dir: Path, wanted: list[str]) -> bool:
    """Exported with the variants wanted and, for a model that declares images, the image record (an export
    from before the image route has none, and its image requests would get 400)."""
    from torchship import models
    from torchship.preprocess import declares_image

    if not (model_dir / "config.json").is_file():
        return False
    config = json.loads((model_dir / "config.json").read_text())
    tags = {r["precision"] + ("-cl" if r["layout"] == "channels_last" else "") for r in config.get("variants", [])}
    needs_image = declares_image(models.get(model_dir.name).preprocessing)
    return set(wanted) <= tags and (config.get("image") is not None or not needs_image)


def prepare_repository(models: list[str], variants: list[str]) -> Path:
    """Exports each model (TorchScript) with the export-time variants asked for; re-exports when one is missing."""
    repo = WORK / "repository"
    made = [v for v in variants if v in EXPORT_VARIANTS]
    for m in models:
        wanted = [v for v in made if v in VARIANTS_MADE_FOR.get(m, ())]
        if (repo / m).is_dir() and _up_to_date(repo / m, wanted):
            continue
        extra = [flag for v in wanted for flag in export_variant_flags(v, m)]
        if "int8" in wanted and m not in TRAINED:
            from torchship.export.calibration import write_sample_crops

            write_sample_crops(WORK / "calibration")
        source = m
        if m in TRAINED:
            source = str(WORK / "checkpoints" / f"{m}.ckpt")
            if not Path(source).is_file():
                sh(str(BIN / "torchship"), *TRAINED[m], "--out", source)
        sh(str(BIN / "torchship"), "export", source, "--repository", str(repo), "--formats", "torchscript", *extra)
    return repo


def variant_verification(model_dir: Path, variant: str) -> dict:
    """What export measured for the variant a run serves (manifest.json): its max abs difference from fp32 eager
    and bound, and for int8 the top-1 agreement with fp32 on held-out inputs: accuracy beside speed."""
    manifest = json.loads((model_dir / "1" / "manifest.json").read_text())
    precision = variant.partition("-")[0]
    precision = "fp32" if precision == "exported" else precision
    layout = "channels_last" if variant.endswith("-cl") else "contiguous"
    out: dict = {"precision": precision, "layout": layout}
    for v in manifest.get("variants", []):
        if v.get("precision") == precision and v.get("layout") == layout:
            out.update(file=v["file"], **{k: v["verification"][k] for k in ("max_abs", "bound") if "verification" in v})
    quantization = manifest.get("quantization") or {}
    if precision == "int8" and quantization:
        checked = next(iter(quantization.get("verification", {}).values()), {})
        out.update(
            calibration=quantization.get("calibration", {}).get("source"),
            held_out=checked.get("inputs"),
            top1_agreement=checked.get("top1_agreement"),
            accuracy=checked.get("held_out_accuracy"),
        )
    if "file" not in out:
        out["converted_at_load"] = True  # no exported variant: the server converts model.pt as it loads
    return out


def single_repo(repo: Path, model: str) -> Path:
    """A repository holding only `model` (a copy: the runtime refuses symlinks out of a repository), so a
    server loads nothing else."""
    path = WORK / f"repo_{model}"
    stale = (path / model / "config.json").is_file() and (path / model / "config.json").read_bytes() != (
        repo / model / "config.json"
    ).read_bytes()
    if (path / model).is_symlink() or stale:  # made by an earlier version of this script, or an older export
        shutil.rmtree(path)
    if not path.exists():
        path.mkdir(parents=True)
        shutil.copytree(repo / model, path / model)
    return path


def input_name(repo: Path, model: str) -> str:
    return json.loads((repo / model / "config.json").read_text())["inputs"][0]["name"]


class Payload(NamedTuple):
    """One request wrk sends over and over: its body, Content-Type, Inference-Header-Content-Length, route."""

    body: Path
    content_type: str
    header_length: str
    route: str = "infer"


def write_payloads(repo: Path, model: str) -> dict[str, Payload]:
    """protocol -> the request: JSON and binary tensors, and for a model with an image record an image."""
    shape = MODELS[model]
    name = input_name(repo, model)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = {}
    body = json.dumps(
        {"inputs": [{"name": name, "shape": list(shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    )
    path = WORK / f"{model}.json.body"
    path.write_text(body)
    out["json"] = Payload(path, "application/json", "")
    header = json.dumps(
        {
            "inputs": [
                {"name": name, "shape": list(shape), "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    header = padded_header(header)  # as torchship's client sends it: the server reads the tensor in place
    path = WORK / f"{model}.bin.body"
    path.write_bytes(header + x.tobytes())
    out["binary"] = Payload(path, "application/octet-stream", str(len(header)))
    if json.loads((repo / model / "config.json").read_text()).get("image"):
        import sklearn.datasets

        photo = Path(sklearn.datasets.__file__).parent / "images" / IMAGE_SAMPLE
        out["image"] = Payload(photo, "image/jpeg", "", "image")
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# What torchship-server answers to the MLP request, served as a constant by nginx: the HTTP floor.
FLOOR_BODY = (
    '{"model_name":"thermometer_mlp","model_version":"1",'
    '"outputs":[{"name":"t_c","datatype":"FP32","shape":[1,1],"data":[-0.4101562]}]}'
)


@contextmanager
def spawned(cmd: list[str], port: int, log: Path) -> Iterator[tuple[str, int]]:
    """A server process answering on `port` once ready; terminated on exit. Yields (url, pid)."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def nginx_floor_command(port: int) -> list[str]:
    """nginx answering every request with FLOOR_BODY: loopback + wrk + an HTTP server doing no work."""
    conf = WORK / "nginx-floor.conf"
    conf.write_text(
        f"master_process off; daemon off; pid {WORK}/nginx-floor.pid; error_log stderr;\n"
        "events { worker_connections 1024; }\n"
        f"http {{ access_log off; client_body_temp_path {WORK}; default_type application/json;\n"
        f"  server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;\n"
        f"    location / {{ return 200 '{FLOOR_BODY}'; }} }} }}\n"
    )
    return [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf)]


@contextmanager
def server(kind: str, repo: Path, model: str, extra: list[str]) -> Iterator[tuple[str, int]]:
    """A torchship-server (via torchship.server_process), the Flask baseline or the nginx floor; yields (url, pid)."""
    if kind == "torchship":
        with ServerProcess(repo, *extra, log_path=WORK / "torchship-server.log") as srv:
            yield srv.url, srv.pid
        return
    port = free_port()
    if kind == "nginx-floor":
        cmd = nginx_floor_command(port)
    else:
        flask = ROOT / "benchmarks" / "flask_baseline.py"
        cmd = [sys.executable, str(flask), str(repo / model / "1" / "model.pt"), "--name", model, "--port", str(port)]
    with spawned(cmd, port, WORK / f"{kind}.log") as (url, pid):
        yield url, pid


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout_s: float = 120.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1.0).status_code == 200:
                return time.perf_counter() - start
        except httpx.TransportError:
            pass
        time.sleep(0.01)
    raise TimeoutError(f"{url} not ready after {timeout_s} s")


def run_wrk(url: str, model: str, payload: Payload, concurrency: int, duration: int) -> dict:
    body, ctype, ihcl, route = payload
    path = f"/v2/models/{model}/{route}"
    env = dict(os.environ, BODY_FILE=str(body), CONTENT_TYPE=ctype, INFER_HEADER_LEN=ihcl, URL_PATH=path)
    threads = min(max(2, (os.cpu_count() or 2) // 4), concurrency)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(ROOT / "benchmarks" / "wrk_infer.lua"),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK_JSON "))
    result = json.loads(line[len("WRK_JSON ") :])
    result["wrk_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def measure_server(
    kind: str, repo: Path, model: str, payloads: dict, args: argparse.Namespace, extra: list[str]
) -> list[Point]:
    points = []
    with server(kind, repo, model, extra) as (url, pid):
        for protocol, payload in payloads.items():
            for c in args.concurrency:
                runs = []
                for _ in range(args.repeats):
                    cpu0 = cpu_seconds(pid)
                    r = run_wrk(url, model, payload, c, args.duration)
                    cpu = cpu_seconds(pid) - cpu0
                    n = max(r["requests"], 1)
                    runs.append(
                        Point(
                            kind,
                            model,
                            protocol,
                            c,
                            r["requests"] / (r["duration_us"] / 1e6),
                            r["p50_us"] / 1e3,
                            r["p99_us"] / 1e3,
                            cpu / n * 1e3,
                            r["wrk_cpu_s"] / n * 1e3,
                            r["errors_status"] + r["errors_connect"] + r["errors_read"] + r["errors_timeout"],
                        )
                    )
                med = sorted(runs, key=lambda p: p.rps)[len(runs) // 2]
                print(
                    f"  {kind:<9} {model:<16} {protocol:<6} c={c:<3} {med.rps:9.1f} req/s  p50 {med.p50_ms:7.3f} ms"
                    f"  p99 {med.p99_ms:7.3f} ms  errors {med.errors}",
                    flush=True,
                )
                points.append(med)
    return points


def fairness_points(repo: Path, model: str, extra: list[str], connections: list[int], seconds: float) -> list[dict]:
    """Every connection served, not just the total: closed-loop JSON requests on each of N keep-alive connections."""
    import asyncio

    import closed_loop

    closed_loop.raise_nofile()
    body = write_payloads(repo, model)["json"][0].read_bytes()
    out = []
    # The queue bound above the connection count: this measures who gets served, not overload (503s).
    flags = [*extra, "--max-connections", "4096", "--max-queue-size", "4096"]
    with server("torchship", repo, model, flags) as (url, _pid):
        port = int(url.rsplit(":", 1)[1])
        for n in connections:
            r = asyncio.run(closed_loop.fairness(port, f"/v2/models/{model}/infer", body, n, seconds))
            print(
                f"  fairness c={n:<5} {r['req_per_s']:9.1f} req/s  slowest/median connection "
                f"{r['min_over_median']:.2f}  longest wait {r['max_wait_s'] * 1e3:.0f} ms  errors {r['errors']}",
                flush=True,
            )
            out.append(r)
    return out


def server_allocator() -> str | None:
    """The malloc library torchship-server links (tcmalloc when CMake found it), from ldd."""
    out = subprocess.run(["ldd", str(server_binary())], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if "tcmalloc" in line or "jemalloc" in line:
            return line.split("=>")[1].split("(")[0].strip()
    return None


def in_process_limit(
    repo: Path, model: str, seconds: float, threads: int, preload: str | None, *flags: str, **kw: str
) -> dict:
    """benchmarks/in_process.py in a child process with `preload` as its allocator (None: the system's)."""
    shape = MODELS[model]
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    cmd = [sys.executable, str(ROOT / "benchmarks" / "in_process.py"), str(repo), model]
    cmd += ["--shape", ",".join(map(str, shape)), "--seconds", str(seconds), "--threads", str(threads)]
    for key, value in kw.items():
        cmd += [f"--{key}", value]
    cmd += flags
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def allocator_ab(repo: Path, model: str, seconds: float, threads: int, rounds_n: int = 3) -> dict[str, dict]:
    """In-process items/s by batch size under each allocator installed (medians of interleaved rounds)."""
    from ctypes.util import find_library

    candidates = {"glibc": None, "tcmalloc": find_library("tcmalloc_minimal"), "jemalloc": find_library("jemalloc")}
    candidates = {name: lib for name, lib in candidates.items() if name == "glibc" or lib}
    rounds: dict[str, list[dict]] = {name: [] for name in candidates}
    for _ in range(rounds_n):  # interleaved, so a slow spell on the VM hits every allocator alike
        for name, lib in candidates.items():
            rounds[name].append(in_process_limit(repo, model, seconds, threads, lib, batches="1,8,16,32", repeats="1"))
    medians = {}
    for name, runs in rounds.items():
        by_batch = [r["items_per_s_by_batch"] for r in runs]
        medians[name] = {"items_per_s_by_batch": {b: statistics.median(r[b] for r in by_batch) for b in by_batch[0]}}
    return medians


def cold_start(repo: Path, model: str, repeats: int, extra: list[str]) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with server("torchship", repo, model, extra):
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    global WORK  # --work-dir: every helper here writes under it
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=DEFAULT_MODELS, help=f"of {', '.join(MODELS)} (default %(default)s)")
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default %(default)s)")
    p.add_argument(
        "--repeats", type=int, default=3, help="runs per point; the median is reported (default %(default)s)"
    )
    p.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=list(CONCURRENCY))
    p.add_argument(
        "--fairness",
        type=lambda s: [int(c) for c in s.split(",") if c],
        default=list(FAIRNESS_CONNECTIONS),
        help="connection counts for the MLP's per-connection fairness points ('' to skip; default %(default)s)",
    )
    p.add_argument("--skip-flask", action="store_true", help="measure torchship only")
    p.add_argument("--skip-allocators", action="store_true", help="skip the in-process allocator A/B")
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra torchship-server argument, repeatable, for A/B runs (e.g. --server-arg=--max-queue-delay-us=2000)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument(
        "--variants",
        default="exported",
        help="comma-separated run variants: exported, fp32, fp16 or bf16, each optionally -cl (channels_last), "
        "and int8; for ResNet-18 bf16-cl and int8 are exported variants (model.bf16-cl.pt2, model.int8.pt, "
        "calibrated on crops of scikit-learn's sample photos), e.g. exported,bf16-cl,int8 (default %(default)s)",
    )
    p.add_argument(
        "--intra-op-threads",
        type=int,
        help="torch intra-op threads, server and in-process (default: 2 for ResNet-18 on CPU, else 1)",
    )
    p.add_argument(
        "--protocols",
        type=lambda s: s.split(","),
        default="json,binary,image",
        help="json,binary,image: image is the image route, for models with an image record (ResNet-18), "
        "measured on the exported variant only (default %(default)s)",
    )
    p.add_argument("--max-batch-size", type=int, help="override config.json's, for the server and in-process alike")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=WORK,
        help="exports, copies, request bodies and logs (default %(default)s); another one keeps an A/B run apart",
    )
    args = p.parse_args()
    WORK = args.work_dir.resolve()
    python = Path(sys.executable)
    python_name = str(python.relative_to(ROOT)) if python.is_relative_to(ROOT) else "python3"
    args.command = " ".join([python_name, *sys.argv])
    if not shutil.which("wrk"):
        sys.exit("wrk not found: run tools/bootstrap.sh (it installs Debian's wrk)")
    WORK.mkdir(parents=True, exist_ok=True)
    models = args.models.split(",")
    variants = args.variants.split(",")
    for v in variants:
        variant_flags(v)  # a bad name stops here, before any export
    repo = prepare_repository(models, variants)
    allocator = server_allocator()
    results: dict = {"points": [], "in_process": {}, "cold_start_s": {}, "settings": {}, "allocator": allocator}
    for model in models:
        one = single_repo(repo, model)
        payloads = {k: v for k, v in write_payloads(repo, model).items() if k in args.protocols}
        # On a GPU the host only copies: one intra-op thread, else every batch's copies wake an OpenMP team
        # that spins between batches (ResNet-50 on an H100 with torch's default of 16 threads: 57 ms of
        # server CPU per request at c=1).
        threads = args.intra_op_threads or (2 if model == "resnet18" and args.device == "cpu" else 1)
        if model == "resnet18" and args.device == "cpu" and not args.skip_allocators:
            results["allocators"] = allocator_ab(one, model, args.duration / 2, threads)
            for name, r in results["allocators"].items():
                print(f"  in-process, {name}: {r['items_per_s_by_batch']}", flush=True)
        device_flags = ["--device", args.device]
        device_flags += ["--cudnn-benchmark"] if args.device != "cpu" else []
        device_flags += ["--max-batch-size", str(args.max_batch_size)] if args.max_batch_size else []
        for variant in variants:
            if variant in EXPORT_VARIANTS and variant not in VARIANTS_MADE_FOR.get(model, ()):
                print(f"== {model} {variant}: skipped (not exported for {model})", flush=True)
                continue
            label = model if variant == "exported" else f"{model} {variant}"
            print(f"== {label}", flush=True)
            flags = variant_flags(variant)
            extra = ["--intra-op-threads", str(threads), *device_flags, *flags, *args.server_arg]
            results["settings"][label] = " ".join(extra)
            results["in_process"][label] = in_process_limit(
                one, model, args.duration / 2, threads, allocator, *device_flags, *flags, repeats=str(args.repeats)
            )
            print(f"  in-process limit: {results['in_process'][label]}", flush=True)
            results["cold_start_s"][label] = cold_start(one, model, 3, extra)
            results.setdefault("verification", {})[label] = variant_verification(one / model, variant)
            print(f"  cold start (spawn -> ready): {results['cold_start_s'][label]:.2f} s", flush=True)
            # The image route on the variant as exported: what decoding and preprocessing add is the point.
            routes = {k: v for k, v in payloads.items() if k != "image" or variant == "exported"}
            points = measure_server("torchship", one, model, routes, args, extra)
            tensors = {k: v for k, v in payloads.items() if k != "image"}  # the book's Flask takes tensors only
            if not args.skip_flask and variant == "exported":
                points += measure_server("flask", one, model, tensors, args, [])
            floor = model == "thermometer_mlp" and args.device == "cpu" and variant == "exported"
            if floor and args.fairness:
                results["fairness"] = fairness_points(one, model, extra, args.fairness, args.duration * 2)
            if floor and "json" in payloads:
                points += measure_server("nginx-floor", one, model, {"json": payloads["json"]}, args, [])
            for pt in points:
                pt.model = label
            results["points"] += [asdict(pt) for pt in points]
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    from report import write_report

    write_report(results, args, args.out)
    print(f"written: {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    print(f"machine: {platform.node()} {os.cpu_count()} CPUs, torch {torch.__version__}")
    main()
