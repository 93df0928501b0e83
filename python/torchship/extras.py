"""Optional dependencies: which extra of the torchship package brings a module that is missing.

The core (runtime facade, client, ``torchship serve``) needs torch, numpy and httpx; each stage's libraries
come with an extra (``pip install 'torchship[train]'``). ``pyproject.toml``'s
``[project.optional-dependencies]`` is the one list: this module reads it back from the installed package's
metadata, so a missing module becomes a message naming the extra that installs it.
"""

from __future__ import annotations

import re
from importlib import metadata

# Import names that differ from their distribution's name; any other import name is its distribution's.
DISTRIBUTION_OF_MODULE = {"sklearn": "scikit-learn", "PIL": "pillow", "yaml": "pyyaml", "SimpleITK": "simpleitk"}

_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def normalize(name: str) -> str:
    """A distribution name as the packaging spec compares them (PEP 503): ``Scikit_Learn`` -> ``scikit-learn``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution_of(module: str) -> str:
    """The distribution that installs the top-level package of ``module`` (``sklearn.datasets`` -> scikit-learn)."""
    top = module.split(".")[0]
    return normalize(DISTRIBUTION_OF_MODULE.get(top, top))


def extras_providing(distribution: str, requires: list[str] | None = None) -> list[str]:
    """The extras of torchship whose requirements name ``distribution``, in declaration order.

    ``requires`` is the package's Requires-Dist list; by default the installed torchship's.
    """
    if requires is None:
        try:
            requires = metadata.requires("torchship") or []
        except metadata.PackageNotFoundError:  # run from a source tree that was never installed
            return []
    wanted = normalize(distribution)
    extras: list[str] = []
    for requirement in requires:
        name, marker = _REQUIREMENT_NAME.match(requirement), _EXTRA_MARKER.search(requirement)
        if name and marker and normalize(name.group(1)) == wanted and marker.group(1) not in extras:
            extras.append(marker.group(1))
    return extras


def missing_extra_message(error: BaseException, requires: list[str] | None = None) -> str | None:
    """``pip install 'torchship[extra]'`` for a missing module an extra provides; None when no extra does.

    ``error`` is the ModuleNotFoundError, or an error raised because of one (an export step wraps the
    failures of the exporter it calls): its causes are followed.
    """
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ModuleNotFoundError) and cause.name:
            distribution = distribution_of(cause.name)
            extras = [e for e in extras_providing(distribution, requires) if e != "dev"]
            if extras:
                commands = " or ".join(f"pip install 'torchship[{e}]'" for e in extras)
                return f"this needs {distribution} (module {cause.name!r}), which is not installed: {commands}"
        cause = cause.__cause__ or cause.__context__
    return None
