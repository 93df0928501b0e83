"""``torchship export <checkpoint | registry name> --repository DIR``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from torchship.export.formats import ALL_FORMATS
from torchship.export.pipeline import DEVICES, export_checkpoint
from torchship.export.shapes import parse_shape
from torchship.export.source import resolve
from torchship.export.verify import format_table


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_named_shapes(items: list[str] | None) -> dict[str, list[tuple[int, ...]]]:
    """``["image=1x3x64x64", "image=1x3x227x227"]`` -> ``{"image": [(1, 3, 64, 64), (1, 3, 227, 227)]}``."""
    out: dict[str, list[tuple[int, ...]]] = {}
    for item in items or []:
        name, sep, shape = item.partition("=")
        if not sep or not name:
            raise ValueError(f"bad shape argument {item!r}: expected INPUT=AxBxC, e.g. image=1x3x64x64")
        out.setdefault(name.strip(), []).append(parse_shape(shape))
    return out


def parse_model_args(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    args = json.loads(text)
    if not isinstance(args, dict):
        raise ValueError(f"--model-args must be a JSON object, e.g. '{{\"ngf\": 8}}', not {text!r}")
    return args


def _run(args: argparse.Namespace) -> int:
    source = resolve(args.source, parse_model_args(args.model_args), args.init_seed, weights=args.weights)
    example = {k: v[-1] for k, v in parse_named_shapes(args.example_shape).items()}
    result = export_checkpoint(
        source,
        args.repository,
        split_list(args.formats),
        name=args.name,
        version=args.version,
        max_batch_size=args.max_batch_size,
        devices=split_list(args.device),
        example_shapes=example or None,
        verify_shapes=parse_named_shapes(args.verify_shape) or None,
        torchscript_method=args.torchscript_method,
        seed=args.seed,
        variants=split_list(args.variants or ""),
        allow_degenerate=args.allow_degenerate or (),
        quantize=args.quantize,
        calibration=args.calibration,
    )
    print(format_table(result.rows))
    print(f"exported {result.model} version {result.version} ({result.weights}) -> {result.directory}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint (or a registry model, randomly initialised) to verified artifacts",
        description="Write TorchScript / ONNX / .pt2 artifacts into a model repository, each reloaded in its own "
        "runtime and compared with eager PyTorch before anything is written. A registry name instead of a "
        "checkpoint exports the model freshly initialised, labelled 'random-init (no checkpoint)'.",
    )
    p.add_argument(
        "source",
        help="checkpoint written by `torchship train`, a registry model name, or MODULE:FUNCTION "
        "(a builder registered with @torchship.register_model; the module is imported)",
    )
    p.add_argument(
        "--weights",
        type=Path,
        help="with a registry name or MODULE:FUNCTION: a plain state_dict file (torch.save(model.state_dict(), "
        "FILE)) to export instead of the random initialisation; every key must fit",
    )
    p.add_argument("--repository", type=Path, default=Path("model_repository"), help="default %(default)s")
    p.add_argument("--formats", default=",".join(ALL_FORMATS), help="comma-separated subset of %(default)s")
    p.add_argument(
        "--device",
        default="cpu",
        help=f"comma-separated subset of {','.join(DEVICES)}: .pt2 is compiled per device "
        "(model.pt2, model.cuda.pt2) and TorchScript verified on each (default %(default)s)",
    )
    p.add_argument("--version", type=int, help="version number (default: next free)")
    p.add_argument("--name", help="model name in the repository (default: the registry name)")
    p.add_argument("--max-batch-size", type=int, help="largest batch served (default: the registry's)")
    p.add_argument("--model-args", help="JSON constructor arguments for a registry name, e.g. '{\"ngf\": 8}'")
    p.add_argument("--init-seed", type=int, default=0, help="seed of the random initialisation (default 0)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the example and verification inputs")
    p.add_argument(
        "--example-shape",
        action="append",
        metavar="INPUT=AxBxC",
        help="example shape (batch included) for an input with dynamic dims, e.g. image=1x3x64x64",
    )
    p.add_argument(
        "--verify-shape",
        action="append",
        metavar="INPUT=AxBxC",
        help="a further shape to verify at (repeatable), e.g. image=1x3x227x227; default: dynamic sizes doubled",
    )
    p.add_argument("--torchscript-method", choices=("trace", "script"), help="override the registry's choice")
    p.add_argument(
        "--variants",
        metavar="V1,V2",
        help="further compiled .pt2 variants (docs/variants.md), each verified: bf16, bf16-cl, fp32-cl on the CPU; "
        "fp16, fp16-cl with --device cuda",
    )
    p.add_argument(
        "--quantize",
        choices=("int8",),
        help="add statically quantized variants (docs/quantization.md): model.int8.pt (FX, x86) and model.int8.pt2 "
        "(torchao PT2E, X86InductorQuantizer), each verified against fp32 on held-out calibration inputs",
    )
    p.add_argument(
        "--calibration",
        metavar="SOURCE",
        help="with --quantize: 'dataset' (the checkpoint's own data set, the default where its model declares one), "
        "a directory of images, a .npy [N, *input shape] already preprocessed, or 'random' (labelled so)",
    )
    p.add_argument(
        "--allow-degenerate",
        action="append",
        metavar="OUTPUT",
        help="export although this output's eager reference is degenerate (all zero, constant or below the floor "
        "of docs/tolerance.md); the manifest and the log say so",
    )
    p.set_defaults(func=_run)
