#!python
"""``torchship-server``: run the native server binary against the torch it was built against.

pip installs this file as the ``torchship-server`` script (serve/CMakeLists.txt; the ``#!python`` line
becomes the environment's interpreter). The binary itself lives in the package, ``torchship/bin/``. This
file imports neither torch nor the torchship package (importing torch takes seconds, and the server is
restarted often): it finds both with ``importlib.util.find_spec``, reads torch's version from
``torch/version.py``, refuses a torch other than the one the build recorded (with the message
``import torchship`` gives), and execs the binary, which keeps the process id and so its signals.
The binary's RUNPATH finds libtorch beside torchship (``$ORIGIN/../../torch/lib``); when torch lives
elsewhere on ``sys.path`` (a ``.pth`` file, ``--system-site-packages``), ``LD_LIBRARY_PATH`` names it.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

BINARY = Path("bin/torchship-server")  # inside the torchship package


class LaunchError(RuntimeError):
    """The server cannot be started in this environment; the message says why and what to do."""


def _package_dirs(name: str) -> list[Path]:
    spec = importlib.util.find_spec(name)  # a top-level package: found, not imported
    if spec is None or not spec.submodule_search_locations:
        raise LaunchError(f"{name} is not installed in the environment of {sys.executable}")
    return [Path(p) for p in spec.submodule_search_locations]


def torchship_dir() -> Path:
    """The torchship package directory that holds the server binary (editable installs have several)."""
    dirs = _package_dirs("torchship")
    for d in dirs:
        if (d / BINARY).is_file():
            return d
    raise LaunchError(
        f"torchship-server is not built: no {BINARY} in {', '.join(map(str, dirs))} "
        "(install a torchship wheel, or run tools/bootstrap.sh in a checkout)"
    )


def torch_lib_dir() -> Path:
    return _package_dirs("torch")[0] / "lib"


def torch_version() -> str:
    """torch.__version__ without importing torch: the literal in torch/version.py."""
    path = _package_dirs("torch")[0] / "version.py"
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise LaunchError(f"{path} names no __version__")


def build_info(package: Path) -> ModuleType:
    """torchship/_build_info.py (what the binary was compiled against), loaded without importing torchship."""
    spec = importlib.util.spec_from_file_location("_torchship_build_info", package / "_build_info.py")
    if spec is None or spec.loader is None:
        raise LaunchError(f"{package / '_build_info.py'} is missing: the native build is incomplete")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def server_command(package: Path | None = None) -> tuple[Path, dict[str, str]]:
    """The server binary and the environment to run it in; LaunchError when the torch here is not its torch."""
    package = package or torchship_dir()
    problem = build_info(package).torch_mismatch(torch_version())
    if problem:
        raise LaunchError(problem)
    return package / BINARY, server_env()


def server_env() -> dict[str, str]:
    """This process's environment, with torch's library directory first on LD_LIBRARY_PATH."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(torch_lib_dir()), env.get("LD_LIBRARY_PATH")) if p)
    return env


def main() -> None:
    try:
        binary, env = server_command()
    except LaunchError as e:
        sys.exit(f"torchship-server: error: {e}")
    os.execve(binary, ["torchship-server", *sys.argv[1:]], env)


if __name__ == "__main__":
    main()
