"""``torchship serve`` and ``torchship predict``: the native HTTP server, and a client call to it.

torchship serve --model-repository model_repository [--http-port 8000] ...   execs torchship-server
torchship predict --model thermometer_linear --input x.json [--url ...]       one inference over HTTP
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from torchship.server_process import server_binary

# torchship-server's flags, passed through unchanged when given: (flag, type, help).
SERVER_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("--device", str, "auto, cpu, cuda or cuda:N (server default: auto)"),
    ("--http-port", int, "port; 0 picks a free one, printed on stdout (server default: 8000)"),
    ("--host", str, "address to bind (server default: 127.0.0.1)"),
    ("--threads", int, "HTTP connection threads; each keep-alive connection holds one"),
    ("--format", str, "auto, torchscript or pt2"),
    ("--max-batch-size", int, "override config.json's max_batch_size"),
    ("--max-queue-delay-us", int, "override the batcher's max queue delay (microseconds)"),
    ("--max-queue-size", int, "override the queue bound (beyond it: 503 + Retry-After)"),
    ("--instance-count", int, "override the number of model instances"),
    ("--max-body-bytes", int, "largest request body accepted (beyond it: 413)"),
    ("--log-level", str, "trace, debug, info, warning, error or off"),
    ("--intra-op-threads", int, "torch intra-op threads (0: 1 on CUDA, torch's default on CPU)"),
    ("--precision", str, "exported, fp32, fp16 or bf16: the dtype floating math runs in (TorchScript only)"),
    ("--channels-last", bool, "4-D weights and inputs in NHWC, cuDNN's fast layout"),
    ("--cudnn-benchmark", bool, "cuDNN times its algorithms per new input shape"),
    ("--allow-tf32", bool, "TF32 for fp32 matmul/conv on Ampere+ GPUs"),
)


def server_argv(args: argparse.Namespace) -> list[str]:
    argv = [str(server_binary(search_path=True)), "--model-repository", str(args.model_repository)]
    for flag, kind, _ in SERVER_FLAGS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if kind is bool:
            argv += [flag] if value else []
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def _serve(args: argparse.Namespace) -> int:
    argv = server_argv(args)
    os.execv(argv[0], argv)  # the server owns the process from here: signals, exit code


def load_input(path: Path, dtype: torch.dtype) -> torch.Tensor:
    """A .npy array, or a .json nested list, as a tensor of the model's input dtype."""
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False)).to(dtype)
    if path.suffix == ".json":
        return torch.tensor(json.loads(path.read_text()), dtype=dtype)
    raise ValueError(f"{path}: expected a .npy file or a .json nested list")


def _predict(args: argparse.Namespace) -> int:
    from torchship.client import Client, dtype_of

    with Client(args.url, timeout=args.timeout) as client:
        metadata = client.model_metadata(args.model)
        if len(metadata["inputs"]) != 1:
            names = [i["name"] for i in metadata["inputs"]]
            raise ValueError(f"model {args.model!r} takes {len(names)} inputs {names}; predict sends one")
        spec = metadata["inputs"][0]
        config = _config(args)
        if args.input.suffix.lower() in IMAGE_SUFFIXES:
            if config is None:
                raise ValueError(f"{args.input} is an image: pass --repository so its preprocessing can be applied")
            from torchship.preprocess import load_image

            x = load_image(str(args.input), config.get("preprocessing") or {})
        else:
            x = load_input(args.input, dtype_of(spec["datatype"]))
        outputs = client.infer(args.model, {spec["name"]: x}, binary_inputs=args.binary, binary_outputs=args.binary)
    labels = (config or {}).get("labels")
    for name, t in outputs.items():
        if labels and t.dim() == 2 and t.shape[1] == len(labels):
            top = torch.softmax(t.float(), dim=1)[0].topk(min(5, len(labels)))
            pairs = zip(top.values, top.indices, strict=True)
            ranked = ", ".join(f"{labels[i]} {100 * float(p):.2f}%" for p, i in pairs)
            print(f"{name}: {ranked}")
        else:
            print(f"{name}: {t.tolist()}")
    return 0


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def _config(args: argparse.Namespace) -> dict | None:
    """The model's config.json from the repository (preprocessing, labels), when --repository is given."""
    if args.repository is None:
        return None
    return json.loads((args.repository / args.model / "config.json").read_text())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run torchship-server (Open Inference Protocol over HTTP) on a model repository")
    p.add_argument("--model-repository", type=Path, required=True, help="model repository directory")
    for flag, kind, help_text in SERVER_FLAGS:
        if kind is bool:
            p.add_argument(flag, action="store_true", help=help_text)
        else:
            p.add_argument(flag, type=kind, default=None, help=help_text)
    p.set_defaults(func=_serve)

    p = sub.add_parser("predict", help="send one input to a running torchship server and print the outputs")
    p.add_argument("--model", required=True, help="model name on the server")
    p.add_argument(
        "--input", type=Path, required=True, help="a .npy file, a .json nested list, or an image (needs --repository)"
    )
    p.add_argument(
        "--repository",
        type=Path,
        help="the server's model repository: images get the model's preprocessing from its config.json, "
        "and classifier outputs are printed as its top-5 labels",
    )
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server URL (default %(default)s)")
    p.add_argument("--binary", action="store_true", help="use the binary tensor data extension both ways")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds (default %(default)s)")
    p.set_defaults(func=_predict)
