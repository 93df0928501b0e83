"""``torchship serve`` and ``torchship predict``: the native HTTP server, and a client call to it.

torchship serve --model-repository model_repository [--http-port 8000] ...   execs torchship-server with these arguments
torchship predict --model thermometer_linear --input x.json [--url ...]       one inference over HTTP
torchship predict --model resnet18 --input photo.jpg [--top-k 3]              the image as it is, to the image route
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

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
    if args.input.suffix.lower() in IMAGE_SUFFIXES:
        return _predict_image(args)
    from torchship.client import Client, dtype_of

    with Client(args.url, timeout=args.timeout) as client:
        metadata = client.model_metadata(args.model)
        if len(metadata["inputs"]) != 1:
            names = [i["name"] for i in metadata["inputs"]]
            raise ValueError(f"model {args.model!r} takes {len(names)} inputs {names}; predict sends one")
        spec = metadata["inputs"][0]
        x = load_input(args.input, dtype_of(spec["datatype"]))
        outputs = client.infer(args.model, {spec["name"]: x}, binary_inputs=args.binary, binary_outputs=args.binary)
    labels = (_config(args) or {}).get("labels")
    for name, t in outputs.items():
        if labels and t.dim() == 2 and t.shape[1] == len(labels):
            top = torch.softmax(t.float(), dim=1)[0].topk(min(5, len(labels)))
            pairs = zip(top.values, top.indices, strict=True)
            ranked = ", ".join(f"{labels[i]} {100 * float(p):.2f}%" for p, i in pairs)
            print(f"{name}: {ranked}")
        else:
            print(f"{name}: {t.tolist()}")
    return 0


# What the server's image route decodes; other image files are re-encoded as PNG first (lossless).
SERVED_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
IMAGE_SUFFIXES = SERVED_IMAGE_SUFFIXES | {".bmp", ".gif", ".webp", ".tif", ".tiff"}
OUTPUT_MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def image_output_path(input_path: Path, output: Path | None) -> Path:
    """Where an image model's answer goes: ``--output``, else ``<stem>.out.png`` for a PNG input, else ``.jpg``."""
    if output is not None:
        return output
    suffix = ".png" if input_path.suffix.lower() == ".png" else ".jpg"
    return input_path.with_name(f"{input_path.stem}.out{suffix}")


def image_bytes(path: Path) -> bytes:
    """The file as the server's image route takes it: JPEG and PNG as they are, other formats as lossless PNG."""
    if path.suffix.lower() in SERVED_IMAGE_SUFFIXES:
        return path.read_bytes()
    try:
        from PIL import Image
    except ImportError as e:
        raise ValueError(f"{path}: the server decodes JPEG and PNG; converting {path.suffix} needs Pillow") from e
    import io

    out = io.BytesIO()
    with Image.open(path) as image:
        image.save(out, format="PNG")
    return out.getvalue()


def format_top_k(classes: list[dict[str, Any]]) -> str:
    """A classifier's answer as a table: rank, label, index, probability."""
    width = max([len("label"), *(len(str(c.get("label", ""))) for c in classes)])
    lines = [f"{'rank':>4}  {'label':<{width}}  {'index':>5}  probability"]
    for rank, c in enumerate(classes, 1):
        lines.append(f"{rank:>4}  {c.get('label', '')!s:<{width}}  {c['index']:>5}  {c['probability']:.6f}")
    return "\n".join(lines)


def _predict_image(args: argparse.Namespace) -> int:
    """Sends the image as it is to the server's image route: the model's own preprocessing runs there."""
    from torchship.client import Client

    output = image_output_path(args.input, args.output)
    media_type = OUTPUT_MEDIA_TYPES.get(output.suffix.lower())
    if media_type is None:
        raise ValueError(f"--output {output}: expected a .png, .jpg or .jpeg file name")
    # The image first for an image-to-image model; a classifier or any other model answers JSON.
    accept = f"{media_type}, application/json"
    with Client(args.url, timeout=args.timeout) as client:
        answer = client.infer_image(args.model, image_bytes(args.input), top_k=args.top_k, accept=accept)
    if answer.top_k is not None:
        print(format_top_k(answer.top_k))
    elif answer.image is not None:
        output.write_bytes(answer.image)
        print(f"wrote {output} ({answer.content_type}, {len(answer.image)} bytes)")
    else:
        for name, t in (answer.outputs or {}).items():
            print(f"{name}: {t.tolist()}")
    return 0


def _config(args: argparse.Namespace) -> dict | None:
    """The model's config.json from the repository (labels), when --repository is given."""
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
        "--input",
        type=Path,
        required=True,
        help="a .npy file or a .json nested list (sent as a tensor), or an image file: JPEG or PNG sent as it is "
        "to the server's image route, which runs the model's own preprocessing",
    )
    p.add_argument(
        "--top-k", type=int, help="images: how many classes a classifier answers (the server's default is 5)"
    )
    p.add_argument(
        "--output",
        type=Path,
        help="images: where an image-to-image model's answer goes; .png or .jpg picks the format "
        "(default: <input stem>.out.png for a PNG input, else <input stem>.out.jpg)",
    )
    p.add_argument(
        "--repository",
        type=Path,
        help="tensor inputs: the server's model repository, whose config.json labels print a classifier's top-5",
    )
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server URL (default %(default)s)")
    p.add_argument("--binary", action="store_true", help="use the binary tensor data extension both ways")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds (default %(default)s)")
    p.set_defaults(func=_predict)
