"""The parity matrix: every exported model through every runtime, against eager PyTorch.

    torchship parity --repository model_repository [--markdown parity.md] [--server-url URL] [--grpc-address HOST:PORT]

The eager reference is rebuilt from the model's one Python definition (the
registry) with the artifact's own weights, so a repository is enough: no
checkpoint needs to sit beside it. Every comparison goes through
``torchship.tolerance``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torchship import models, tolerance
from torchship.export import formats
from torchship.export.shapes import random_inputs
from torchship.export.toolchain import strict_fp32
from torchship.export.verify import verification_batches
from torchship.models.registry import TensorSpec
from torchship.training.checkpoint import build_model, load_checkpoint, sha256


@dataclass(frozen=True)
class RuntimeSpec:
    """How one column of the matrix runs a model."""

    kind: str  # "python" (TorchScript in Python), "onnx" (ONNX Runtime), "native" (torchship._C), "server"
    fmt: str | None  # the artifact format it loads; None for a server (it loads what it loads)
    device: str = "cpu"
    binary: bool = False  # server: the binary tensor extension, both ways
    grpc: bool = False  # server: the KServe v2 gRPC front end (tritonclient's gRPC client)
    default: bool = True  # run when no runtimes are named

    @property
    def tolerance_key(self) -> str:
        return {"python": str(self.fmt), "onnx": "onnx", "native": f"native-{self.fmt}", "server": "server"}[self.kind]


RUNTIMES: dict[str, RuntimeSpec] = {
    "torchscript": RuntimeSpec("python", "torchscript"),
    "onnx": RuntimeSpec("onnx", "onnx"),
    "native-torchscript": RuntimeSpec("native", "torchscript"),
    "native-pt2": RuntimeSpec("native", "pt2"),
    "server-json": RuntimeSpec("server", None),
    "server-binary": RuntimeSpec("server", None, binary=True),
    "server-grpc": RuntimeSpec("server", None, grpc=True),
    # CPU vs CUDA, fp32 with TF32 off; left out (no rows) where no GPU is visible
    "torchscript-cuda": RuntimeSpec("python", "torchscript", "cuda"),
    "native-torchscript-cuda": RuntimeSpec("native", "torchscript", "cuda"),
    # a torchship-server started with --device cuda at --server-url: only when asked for
    "server-json-cuda": RuntimeSpec("server", None, "cuda", default=False),
    "server-binary-cuda": RuntimeSpec("server", None, "cuda", binary=True, default=False),
    "server-grpc-cuda": RuntimeSpec("server", None, "cuda", grpc=True, default=False),
}
DEFAULT_RUNTIMES = tuple(name for name, spec in RUNTIMES.items() if spec.default)
Runner = Callable[..., tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class ParityRow(tolerance.WithinBound):
    model: str
    runtime: str
    batch_size: int
    output: str
    max_abs: float
    mean_abs: float
    atol: float
    scale: float = 1.0  # the tolerance policy's bound is atol * max(1, max |eager output|)


@dataclass(frozen=True)
class RepositoryModel:
    """One model of a repository: its config, newest version directory and manifest."""

    name: str
    config: dict[str, Any]
    version_dir: Path
    manifest: dict[str, Any]

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.config["inputs"]]

    @property
    def example_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(d.get("example_shape", d["shape"])) for d in self.config["inputs"]]

    def has(self, artifact: str) -> bool:
        return (self.version_dir / artifact).is_file()


def _version_number(p: Path) -> int:
    return int(p.name)


def repository_models(repository: str | Path, names: Sequence[str] = ()) -> list[RepositoryModel]:
    repository = Path(repository)
    found = []
    for config_path in sorted(repository.glob("*/config.json")):
        model_dir = config_path.parent
        if names and model_dir.name not in names:
            continue
        versions = sorted((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=_version_number)
        if not versions:
            continue
        manifest = json.loads((versions[-1] / "manifest.json").read_text())
        found.append(RepositoryModel(model_dir.name, json.loads(config_path.read_text()), versions[-1], manifest))
    missing = set(names) - {m.name for m in found}
    if missing:
        raise LookupError(f"not in {repository}: {', '.join(sorted(missing))}")
    return found


def eager_reference(m: RepositoryModel) -> torch.nn.Module:
    """The model rebuilt from its Python definition; weights from the source checkpoint when it is
    still there unchanged, else from the TorchScript artifact itself."""
    source = m.manifest.get("source_checkpoint") or {}
    path = Path(source["path"]) if source.get("path") else None
    if path is not None and path.is_file() and sha256(path) == source.get("sha256"):
        return build_model(load_checkpoint(path))
    if not m.has("model.pt"):
        raise FileNotFoundError(f"{m.name}: no source checkpoint and no model.pt to take the weights from")
    with formats.torchscript_deprecation_noted():
        weights = torch.jit.load(str(m.version_dir / "model.pt"), map_location="cpu").state_dict()
    model = models.get(m.manifest["registry_model"]).build(**m.manifest.get("model_args", {}))
    model.load_state_dict(weights)
    return model.eval()


def _native_runner(repository: Path, m: RepositoryModel, fmt: str, device: str = "cpu") -> Runner:
    from torchship.runtime import Runtime

    rt = Runtime(repository, device=device, format=fmt, models=[m.name])  # TF32 off unless configured on
    model = rt.model(m.name)

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return formats.as_tuple(model.infer(list(inputs)))

    run.close = rt.close  # type: ignore[attr-defined]
    return run


def _server_runner(url: str, m: RepositoryModel, binary: bool) -> Runner:
    from torchship.client import Client

    client = Client(url)

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = {spec.name: t for spec, t in zip(m.inputs, inputs, strict=True)}
        out = client.infer(m.name, named, binary_inputs=binary, binary_outputs=binary)
        return tuple(out[o["name"]] for o in m.config["outputs"])

    run.close = client.close  # type: ignore[attr-defined]
    return run


def _grpc_runner(address: str, m: RepositoryModel) -> Runner:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(address)

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        sent = []
        for spec, t in zip(m.config["inputs"], inputs, strict=True):
            i = grpcclient.InferInput(spec["name"], list(t.shape), spec["datatype"])
            i.set_data_from_numpy(t.contiguous().numpy())
            sent.append(i)
        result = client.infer(m.name, sent)
        return tuple(torch.from_numpy(result.as_numpy(o["name"]).copy()) for o in m.config["outputs"])

    run.close = client.close  # type: ignore[attr-defined]
    return run


def make_runner(
    runtime: str, repository: Path, m: RepositoryModel, server_url: str | None = None, grpc_address: str | None = None
) -> Runner | None:
    """A callable for ``runtime``, or None when the repository has no artifact for it (or no GPU for a
    ``-cuda`` runtime, or no server URL / gRPC address for a server runtime)."""
    spec = RUNTIMES.get(runtime)
    if spec is None:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if spec.device != "cpu" and not torch.cuda.is_available():
        return None
    if spec.kind == "server" and spec.grpc:
        return _grpc_runner(grpc_address, m) if grpc_address else None
    if spec.kind == "server":
        return _server_runner(server_url, m, spec.binary) if server_url else None
    assert spec.fmt is not None
    artifact = formats.artifact_name(spec.fmt, spec.device)
    if not m.has(artifact):
        return None
    if spec.kind == "native":
        return _native_runner(repository, m, spec.fmt, spec.device)
    return formats.LOADERS[spec.fmt](m.version_dir / artifact, spec.device)


def tolerance_for(runtime: str) -> float:
    spec = RUNTIMES[runtime]
    return tolerance.tolerance(spec.tolerance_key, spec.device)


def check_model(
    repository: str | Path,
    m: RepositoryModel,
    runtimes: Iterable[str] = DEFAULT_RUNTIMES,
    batch_sizes: Sequence[int] | None = None,
    server_url: str | None = None,
    seed: int = 7,
    grpc_address: str | None = None,
) -> list[ParityRow]:
    repository = Path(repository)
    eager = eager_reference(m)
    max_batch = int(m.config["max_batch_size"])
    sizes = (
        verification_batches(max_batch) if batch_sizes is None else sorted({b for b in batch_sizes if b <= max_batch})
    )
    cases = []
    for b in sizes:
        x = random_inputs(m.inputs, m.example_shapes, b, seed + b)
        with torch.no_grad():
            cases.append((b, x, formats.as_tuple(eager(*x))))
    rows: list[ParityRow] = []
    out_names = [o["name"] for o in m.config["outputs"]]
    with strict_fp32():  # TF32 off for TorchScript on CUDA in Python, as the native runtime runs by default
        for runtime in runtimes:
            runner = make_runner(runtime, repository, m, server_url, grpc_address)
            if runner is None:
                continue
            atol = tolerance_for(runtime)
            try:
                for b, x, expected in cases:
                    got = runner(*x)
                    for name, g, e in zip(out_names, got, expected, strict=True):
                        c = tolerance.compare(g, e, atol)
                        rows.append(ParityRow(m.name, runtime, b, name, c.max_abs, c.mean_abs, atol, c.scale))
            finally:
                close = getattr(runner, "close", None)
                if close:
                    close()
    return rows


def run(
    repository: str | Path,
    names: Sequence[str] = (),
    runtimes: Iterable[str] = DEFAULT_RUNTIMES,
    server_url: str | None = None,
    progress: bool = True,
    grpc_address: str | None = None,
) -> list[ParityRow]:
    from tqdm import tqdm

    rows: list[ParityRow] = []
    found = repository_models(repository, names)
    for m in tqdm(found, desc="parity", unit="model", disable=not progress):
        rows.extend(check_model(repository, m, list(runtimes), server_url=server_url, grpc_address=grpc_address))
    return rows


def markdown_table(rows: Sequence[ParityRow]) -> str:
    """Model × runtime: worst max abs error over batch sizes and outputs, and pass/fail."""
    runtimes = [r for r in RUNTIMES if any(row.runtime == r for row in rows)]
    model_names = list(dict.fromkeys(row.model for row in rows))
    lines = ["| model | " + " | ".join(runtimes) + " |", "|---|" + "---|" * len(runtimes)]
    for name in model_names:
        cells = []
        for rt in runtimes:
            sel = [r for r in rows if r.model == name and r.runtime == rt]
            if not sel:
                cells.append("—")
                continue
            worst = max(r.max_abs for r in sel)
            cells.append(f"{worst:.1e} {'✅' if all(r.ok for r in sel) else '❌'}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    batches = sorted({r.batch_size for r in rows})
    lines.append("")
    lines.append(
        f"Max abs difference from eager PyTorch (CPU fp32) over batch sizes {batches} and every output; "
        "✅ = within the tolerance policy (docs/tolerance.md)."
    )
    return "\n".join(lines)


def _run_cli(args: Any) -> int:
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    names = args.models.split(",") if args.models else ()
    rows = run(args.repository, names, runtimes, args.server_url, grpc_address=args.grpc_address)
    table = markdown_table(rows)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
        print(f"written: {args.markdown}")
    failed = [r for r in rows if not r.ok]
    for r in failed:
        print(f"FAIL {r.model} {r.runtime} batch {r.batch_size} {r.output}: max abs {r.max_abs:.3g} > {r.bound:.3g}")
    return 1 if failed else 0


def register(sub: Any) -> None:
    p = sub.add_parser("parity", help="run every repository model through every runtime and compare with eager")
    p.add_argument("--repository", type=Path, default=Path("model_repository"), help="default %(default)s")
    p.add_argument("--models", help="comma-separated model names (default: all)")
    p.add_argument(
        "--runtimes",
        default=",".join(DEFAULT_RUNTIMES),
        help=f"comma-separated subset of {','.join(RUNTIMES)} (default %(default)s); server-*-cuda rows expect "
        "--server-url to be a torchship-server started with --device cuda",
    )
    p.add_argument("--server-url", help="a running torchship-server, e.g. http://127.0.0.1:8000 (server runtimes)")
    p.add_argument(
        "--grpc-address", help="the same server's gRPC front end, e.g. 127.0.0.1:8001 (server-grpc runtimes)"
    )
    p.add_argument("--markdown", type=Path, help="also write the table to this Markdown file")
    p.set_defaults(func=_run_cli)
