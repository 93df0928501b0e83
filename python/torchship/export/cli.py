"""``torchship export <checkpoint> --repository DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from torchship.export.pipeline import ALL_FORMATS, export_checkpoint, format_table


def _run(args: argparse.Namespace) -> int:
    fmts = [f.strip() for f in args.formats.split(",") if f.strip()]
    result = export_checkpoint(
        args.checkpoint, args.repository, fmts, name=args.name, version=args.version, max_batch_size=args.max_batch_size
    )
    print(format_table(result.rows))
    print(f"exported {result.model} version {result.version} -> {result.directory}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to verified artifacts in a model repository")
    p.add_argument("checkpoint", type=Path, help="checkpoint written by `torchship train`")
    p.add_argument("--repository", type=Path, default=Path("model_repository"), help="default %(default)s")
    p.add_argument("--formats", default=",".join(ALL_FORMATS), help="comma-separated subset of %(default)s")
    p.add_argument("--name", help="model name in the repository (default: the checkpoint's registry name)")
    p.add_argument("--version", type=int, help="version number (default: next free)")
    p.add_argument("--max-batch-size", type=int, help="largest batch served (default: the registry's)")
    p.set_defaults(func=_run)
