"""The package's dependencies: a core that serves, extras that unlock the stages, and messages naming them.

Run: .venv/bin/python -m pytest tests/deploy/test_extras.py -q
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from torchship.extras import distribution_of, extras_providing, missing_extra_message

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CORE = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
EXTRAS = {
    extra: {canonicalize_name(Requirement(r).name) for r in reqs}
    for extra, reqs in PROJECT["optional-dependencies"].items()
}
# Requires-Dist as pip writes it into the wheel's metadata, built from pyproject itself (not the installed copy,
# which can lag behind an edit until the next `pip install -e .`).
REQUIRES = [
    *PROJECT["dependencies"],
    *(f'{r}; extra == "{extra}"' for extra, reqs in PROJECT["optional-dependencies"].items() for r in reqs),
]


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> files of python/torchship importing it (at module level or inside functions)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "python/torchship").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("torchship", "__future__"):
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_import_is_declared_in_the_core_or_an_extra() -> None:
    declared = CORE.union(*EXTRAS.values())
    installed = metadata.packages_distributions()
    undeclared = []
    for module, files in sorted(_third_party_imports().items()):
        dist = distribution_of(module)
        # The alias table must agree with what the installed distributions say they provide.
        if module in installed:
            assert dist in {canonicalize_name(d) for d in installed[module]}, (
                f"module {module!r} comes from {installed[module]}, but torchship.extras.distribution_of says "
                f"{dist!r}: add it to DISTRIBUTION_OF_MODULE"
            )
        if dist not in declared:
            undeclared.append(f"{module} ({dist}) imported by {sorted(files)}")
    assert not undeclared, (
        "declare these in pyproject.toml: in [project] dependencies only if the core (runtime, client, serve) needs "
        f"them, else in the extra of the stage that imports them: {undeclared}"
    )


def test_the_core_is_torch_numpy_and_httpx() -> None:
    assert {"torch", "numpy", "httpx"} == CORE


def test_every_declared_distribution_is_pinned_in_the_lock_and_fits_its_range() -> None:
    """tools/requirements.txt is the lock the set-up installs: it must satisfy what the package declares."""
    pins: dict[str, str] = {}
    for line in (ROOT / "tools/requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            pins[canonicalize_name(req.name)] = spec.version
    problems = []
    for raw in REQUIRES:
        req = Requirement(raw.split(";")[0])
        name = canonicalize_name(req.name)
        if name == "torchship":
            continue
        if name not in pins:
            problems.append(f"{req} is not pinned")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req} does not accept the pinned {pins[name]}")
    assert not problems, problems


@pytest.mark.parametrize(
    ("module", "extras"),
    [
        ("sklearn.datasets", ["train"]),
        ("tensorboard", ["train"]),
        ("onnxscript", ["export"]),
        ("onnxruntime", ["export"]),
        ("tritonclient.grpc", ["grpc"]),
        ("PIL.Image", ["train", "export"]),
        ("torchvision", ["train", "export"]),
    ],
)
def test_a_missing_module_names_the_extras_that_install_it(module: str, extras: list[str]) -> None:
    assert [e for e in extras_providing(distribution_of(module), REQUIRES) if e != "dev"] == extras
    message = missing_extra_message(ModuleNotFoundError(f"No module named {module!r}", name=module), REQUIRES)
    assert message is not None
    assert distribution_of(module) in message
    for extra in extras:
        assert f"pip install 'torchship[{extra}]'" in message


def test_a_missing_module_behind_a_wrapping_error_is_found() -> None:
    """export wraps an exporter's failure in ExportError(...) from e: the extra is still named."""
    try:
        try:
            raise ModuleNotFoundError("No module named 'onnx'", name="onnx")
        except ModuleNotFoundError as e:
            raise RuntimeError("onnx export for cpu failed") from e
    except RuntimeError as wrapped:
        message = missing_extra_message(wrapped, REQUIRES)
    assert message is not None and "pip install 'torchship[export]'" in message
    assert missing_extra_message(RuntimeError("no cause"), REQUIRES) is None


@pytest.mark.parametrize("module", ["no_such_module_anywhere", "pytest", "", None, "../../etc/passwd", "x" * 10_000])
def test_a_module_no_extra_provides_gets_no_extra_message(module: str | None) -> None:
    """Unknown, dev-only (pytest: tests are not a stage of the CLI) and hostile names are not dressed up as extras."""
    assert missing_extra_message(ModuleNotFoundError("missing", name=module), REQUIRES) is None


def _core_only(*argvs: list[str], timeout_s: float = 120) -> dict:
    cmd = [sys.executable, str(ROOT / "tests/deploy/core_only.py"), *(json.dumps(a) for a in argvs)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow  # 5-12 s: one interpreter that imports torch and runs ten command lines
def test_the_cli_works_with_only_the_core_installed_and_names_the_extra_it_lacks() -> None:
    core_commands = [["--help"], ["infer", "--help"], ["predict", "--help"], ["serve", "--help"]]
    stage_commands = [["train", "--help"], ["export", "--help"], ["parity", "--help"]]
    report = _core_only(
        *core_commands,
        *stage_commands,
        ["train", "digits-net", "--epochs", "1", "--no-progress"],
        ["train", "thermometer-linear", "--epochs", "1", "--no-progress", "--out", "/nonexistent/x.ckpt"],
    )
    # The emulation is real: the stage libraries are unimportable in that process.
    assert {"sklearn", "tqdm", "onnx", "onnxruntime", "tensorboard", "tritonclient", "torchvision"} <= set(
        report["blocked"]
    )
    results = report["results"]
    for r in results[: len(core_commands)]:  # the core's commands work
        assert r["rc"] == 0 and "usage" in r["stdout"].lower(), r
    assert "serve" in results[0]["stdout"] and "infer" in results[0]["stdout"]
    assert "--model-repository" in results[3]["stdout"]  # torchship serve reached torchship-server itself
    for r in results[len(core_commands) :]:  # a stage's command works or names the extra that brings it
        if r["rc"] != 0:
            assert re.search(r"pip install 'torchship\[(train|export)\]'", r["stderr"]), r
    digits = results[-2]
    assert digits["rc"] != 0 and "pip install 'torchship[train]'" in digits["stderr"], digits
