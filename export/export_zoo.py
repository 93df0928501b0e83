"""Export the whole model zoo into one model repository, each model verified like `torchship export`.

    python export/export_zoo.py --repository model_repository [CHECKPOINT ...] [--checkpoints DIR]
                                [--models a,b] [--formats torchscript,onnx,pt2] [--device cpu[,cuda]]

A model exports from its trained checkpoint where one is given on the command
line or found in the checkpoints directory (default ``checkpoints/``, if it
exists), else freshly initialised and labelled "random-init (no checkpoint)" in
its manifest and config.json: that is how the pretrained architectures without
local weights (ResNets, AlexNet, CycleGAN) enter the repository.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchship import models
from torchship.export import ExportError, export_checkpoint
from torchship.export.cli import split_list
from torchship.export.formats import ALL_FORMATS
from torchship.export.source import Source, from_checkpoint, resolve
from torchship.training.checkpoint import CheckpointError

log = logging.getLogger("torchship.export.zoo")

# Per-model export settings that differ from the registry's. CycleGAN traces at a small
# size for speed; its H and W are dynamic, and verification proves the book's
# 227x227 -> 228x228 still holds. The UNet is checked at the book's 512x512 slices.
ZOO_SETTINGS: dict[str, dict[str, Any]] = {
    "cyclegan": {
        "example_shapes": {"image": (1, 3, 64, 64)},
        "verify_shapes": {"image": [(1, 3, 227, 227)]},
    },
    "luna_segmentation": {
        "verify_shapes": {"ct_slices": [(1, 8, 512, 512)]},
    },
}


@dataclass
class Outcome:
    model: str
    weights: str = ""
    version: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def find_checkpoints(files: Sequence[Path], directory: Path | None) -> dict[str, Path]:
    """Registry name -> checkpoint: files named on the command line win; in the directory the newest per model."""
    found: dict[str, Path] = {}
    if directory is not None and directory.is_dir():
        for path in sorted(directory.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime):
            try:
                found[from_checkpoint(path).checkpoint["model"]] = path
            except (CheckpointError, OSError) as e:
                log.warning("skipping %s: %s", path, e)
    for path in files:
        found[from_checkpoint(path).checkpoint["model"]] = path  # an unreadable named file is an error
    return found


def export_one(name: str, checkpoint: Path | None, args: argparse.Namespace) -> Outcome:
    outcome = Outcome(name)
    try:
        source: Source = from_checkpoint(checkpoint) if checkpoint else resolve(name, prefer_file=False)
        outcome.weights = source.weights
        result = export_checkpoint(
            source,
            args.repository,
            split_list(args.formats),
            devices=split_list(args.device),
            max_batch_size=args.max_batch_size,
            **ZOO_SETTINGS.get(name, {}),
        )
        outcome.version, outcome.seconds = result.version, result.seconds
    except (ExportError, CheckpointError, ValueError) as e:
        outcome.error = str(e)
    return outcome


def summary(outcomes: Sequence[Outcome]) -> str:
    keys = [k for k in dict.fromkeys(k for o in outcomes for k in o.seconds) if not k.endswith(" verify")]
    head = f"{'model':<24} {'version':>7} " + " ".join(f"{k + ' s':>12}" for k in keys) + "  weights"
    lines = [head]
    for o in outcomes:
        cells = " ".join(f"{o.seconds[k]:>12.1f}" if k in o.seconds else f"{'-':>12}" for k in keys)
        status = o.weights if o.error is None else "FAILED: " + o.error.splitlines()[0]
        lines.append(f"{o.model:<24} {o.version if o.version else '-':>7} {cells}  {status}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("checkpoints_given", nargs="*", type=Path, metavar="CHECKPOINT", help="trained checkpoints")
    p.add_argument("--repository", type=Path, default=Path("model_repository"), help="default %(default)s")
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="searched for *.ckpt (if it exists)")
    p.add_argument("--models", help="comma-separated registry names (default: every registered model)")
    p.add_argument("--formats", default=",".join(ALL_FORMATS), help="default %(default)s")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cpu,cuda (.pt2 per device); default %(default)s")
    p.add_argument("--max-batch-size", type=int, help="override every model's max_batch_size (quicker checks)")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first model that fails")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")

    names = split_list(args.models) if args.models else models.names()
    unknown = [n for n in names if n not in models.names()]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; registered: {', '.join(models.names())}")
    checkpoints = find_checkpoints(args.checkpoints_given, args.checkpoints)
    outcomes = []
    started = time.perf_counter()
    for i, name in enumerate(names, start=1):
        ckpt = checkpoints.get(name)
        print(f"[{i}/{len(names)}] {name}: {'checkpoint ' + str(ckpt) if ckpt else 'random init (no checkpoint)'}")
        outcome = export_one(name, ckpt, args)
        outcomes.append(outcome)
        if outcome.error:
            print(f"[{i}/{len(names)}] {name}: FAILED\n{outcome.error}", file=sys.stderr)
            if args.fail_fast:
                break
    print(f"\n{summary(outcomes)}")
    failed = [o.model for o in outcomes if o.error]
    print(
        f"\n{len(outcomes) - len(failed)} of {len(names)} models exported to {args.repository} "
        f"in {time.perf_counter() - started:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
