"""``torchship infer``: run repository models through the native C++ runtime."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def _run(args: argparse.Namespace) -> int:
    from torchship.runtime import Runtime

    values = json.loads(args.data)
    x = torch.tensor(values, dtype=torch.float32)
    with Runtime(args.repository, device=args.device, models=[args.model]) as rt:
        model = rt.model(args.model)
        out = model.infer(x)
    outs = out if isinstance(out, tuple) else (out,)
    for name, t in zip(model.output_names, outs, strict=True):
        print(f"{name}: {t.tolist()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="run a repository model in-process through the native runtime")
    p.add_argument("--repository", type=Path, default=Path("model_repository"), help="default %(default)s")
    p.add_argument("--model", required=True, help="model name in the repository")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default %(default)s)")
    p.add_argument("--data", required=True, help='input as a JSON nested list, e.g. "[[80.0]]"')
    p.set_defaults(func=_run)
