"""Run torchship's CLI as if only the core were installed: every module outside the core's dependency closure
fails to import, as it would in a venv holding torch, numpy and httpx alone.

Run: python tests/deploy/core_only.py '["-h"]' '["train", "thermometer-linear"]' ...
Prints one JSON line: for each argv, its exit code, stdout and stderr. The modules blocked are the
top-level modules of every installed distribution outside the closure of pyproject's core dependencies.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import io
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
from core_site import core_closure  # noqa: E402  (deploy/ is not a package)


def blocked_modules() -> set[str]:
    core = core_closure() | {"torchship", "pip", "setuptools"}
    blocked = set()
    for module, dists in metadata.packages_distributions().items():
        if not any(canonicalize_name(d) in core for d in dists) and module not in sys.stdlib_module_names:
            blocked.add(module)
    return blocked


class _Block(importlib.abc.MetaPathFinder):
    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked: not a core dependency)", name=fullname)
        return None


def _core_entry_points(core: set[str]):
    """entry_points() without those of distributions outside the core (plugins a core-only venv would not have)."""
    original = metadata.entry_points

    def entry_points(**params):
        found = original(**params)
        if not isinstance(found, metadata.EntryPoints):
            return found
        return metadata.EntryPoints(e for e in found if e.dist is None or canonicalize_name(e.dist.name) in core)

    return entry_points


def _run_instead_of_exec(path: str, argv: list[str], env: dict[str, str]) -> None:
    """``torchship serve`` execs torchship-server; here it runs as a child, so later argv lists still run."""
    done = subprocess.run([path, *argv[1:]], env=env, capture_output=True, text=True, timeout=120)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    raise SystemExit(done.returncode)


def main() -> None:
    os.execve = _run_instead_of_exec
    blocked = blocked_modules()
    sys.meta_path.insert(0, _Block(blocked))
    metadata.entry_points = _core_entry_points(core_closure() | {"torchship"})
    from torchship.cli import main as cli_main

    results = []
    for arg in sys.argv[1:]:
        argv = json.loads(arg)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli_main(argv)
            except SystemExit as e:  # argparse's --help and usage errors
                rc = e.code if isinstance(e.code, int) else 1
        results.append({"argv": argv, "rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()})
    print(json.dumps({"blocked": sorted(blocked), "results": results}))


if __name__ == "__main__":
    main()
