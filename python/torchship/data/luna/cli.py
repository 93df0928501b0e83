"""``torchship data``: data sets torchship can make itself (``synth-luna``: CT scans in the LUNA16 layout)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from torchship.data.luna.synth import SynthConfig, write_dataset


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected SLICESxROWSxCOLS such as 64x128x128, got {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="generate data sets (part 2: CT scans in the LUNA16 layout)")
    kinds = p.add_subparsers(dest="data_command", required=True, metavar="KIND")
    s = kinds.add_parser(
        "synth-luna",
        help="write generated CT scans, candidates and annotations in the LUNA16 layout",
        description="Deterministic generated chest CTs (body, lungs, vessels, nodules with a malignancy flag the "
        "image shows) in the LUNA16 layout: subset0..9/<uid>.mhd/.raw, candidates.csv, annotations.csv, "
        "annotations_with_malignancy.csv. The rules are in docs/part2.md.",
    )
    s.add_argument("--out", type=Path, required=True, help="folder to write (created; existing files overwritten)")
    s.add_argument("--series", type=int, default=10, help="number of scans (default %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="the same seed gives the same files (default %(default)s)")
    s.add_argument(
        "--ratio",
        type=float,
        default=400.0,
        help="non-nodule candidates per expected nodule (the book's imbalance is ~400; default %(default)s)",
    )
    s.add_argument("--nodules-per-series", type=float, default=2.5, help="Poisson mean (default %(default)s)")
    s.add_argument(
        "--shape", type=_shape, default=(64, 128, 128), help="voxels per scan, SLICESxROWSxCOLS (default 64x128x128)"
    )
    s.set_defaults(func=_synth)


def _synth(args: argparse.Namespace) -> int:
    cfg = SynthConfig(
        series=args.series,
        seed=args.seed,
        shape=args.shape,
        ratio=args.ratio,
        nodules_per_series=args.nodules_per_series,
    )
    started = time.time()
    counts = write_dataset(cfg, args.out)
    print(
        f"synth-luna: {counts['series']} scans, {counts['nodules']} nodules ({counts['malignant']} malignant), "
        f"{counts['candidates']} candidates ({counts['non_nodule_candidates']} non-nodule) in {args.out} "
        f"({time.time() - started:.1f} s)"
    )
    return 0
