"""``torchship serve`` and ``torchship predict``: the native HTTP server, and a client call to it.

torchship serve --model-repository model_repository [--http-port 8000] ...   execs torchship-server with these arguments
torchship predict --model thermometer_linear --input x.json [--url ...]       one inference over HTTP
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from torchship.server_process import server_binary, server_env


def server_argv(args: argparse.Namespace) -> list[str]:
    """torchship-server's command line: every argument after ``serve`` is passed through unchanged.

    The server declares its flags once (serve/src/options.h); ``torchship serve --help`` shows its help.
    """
    server_args = list(args.server_args)
    if server_args[:1] == ["--"]:
        server_args = server_args[1:]
    return [str(server_binary(search_path=True)), *server_args]


def _serve(args: argparse.Namespace) -> int:
    argv = server_argv(args)
    os.execve(argv[0], argv, server_env())  # the server owns the process from here: signals, exit code


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
    p = sub.add_parser(
        "serve",
        help="run torchship-server (Open Inference Protocol over HTTP and gRPC) on a model repository; "
        "every argument goes to the server (torchship serve --help lists them)",
        add_help=False,
    )
    p.add_argument("server_args", nargs=argparse.REMAINDER, help="torchship-server's arguments")
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
