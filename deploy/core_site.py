"""The core's dependencies, as installed in this environment: which distributions, and a copy of them.

The wheel test and the container image reuse the torch of the set-up's .venv instead of downloading a second
one (4.4 GB with the CUDA libraries it depends on): they take the closure of torchship's core dependencies
(pyproject.toml's [project] dependencies, followed through each distribution's Requires-Dist with markers
evaluated here) and link exactly those files into a new site-packages. Nothing of an extra comes along, so
what runs there runs with the core alone.

Run: .venv/bin/python deploy/core_site.py DEST [--symlink]    (hard links by default: DEST on the same disk)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def core_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    return tomllib.loads(pyproject.read_text())["project"]["dependencies"]


def closure(requirements: list[str]) -> set[str]:
    """The installed distributions pip would install for ``requirements``, by canonical name: each one's
    Requires-Dist followed, with markers evaluated here and extras (``tritonclient[grpc]``) honoured."""
    seen: set[tuple[str, str]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        wanted = [e for e in ("", *req.extras) if (name, e) not in seen]
        if not wanted or name == "torchship":  # torchship[...] in an extra: its own extras are listed beside it
            continue
        try:
            requires = [Requirement(r) for r in metadata.requires(name) or []]
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{req} is needed but not installed in {sys.prefix}") from None
        seen.update((name, e) for e in wanted)
        todo += [r for r in requires if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in wanted)]
    return {name for name, _ in seen}


def core_closure() -> set[str]:
    return closure(core_requirements())


def stage(dest: Path, names: set[str], link: Callable[[Path, Path], None] = os.link) -> int:
    """Links every file of the distributions ``names`` (modules and .dist-info) into ``dest``; returns the count."""
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    for name in sorted(names):
        dist = metadata.distribution(name)
        base = Path(dist.locate_file(""))
        for record in dist.files or []:
            if record.parts[0] == ".." or "__pycache__" in record.parts:  # scripts in bin/; caches
                continue
            source = base / record
            target = dest / record
            if not source.is_file() or target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            link(source, target)
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--symlink", action="store_true", help="symbolic links instead of hard links")
    parser.add_argument("--list", action="store_true", help="only print the distributions")
    parser.add_argument("--also", action="append", default=[], help="another distribution to link (e.g. pip)")
    args = parser.parse_args()
    names = core_closure() | closure(args.also)
    if args.list:
        print("\n".join(sorted(names)))
        return
    print(
        f"{stage(args.dest, names, os.symlink if args.symlink else os.link)} files of {len(names)} distributions "
        f"linked into {args.dest}"
    )


if __name__ == "__main__":
    main()
