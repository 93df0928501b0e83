"""Models and recipes from other packages: entry points and ``--import``.

A package adds models by declaring, in its pyproject.toml::

    [project.entry-points."torchship.models"]
    my_models = "my_package.models"        # a module whose import registers (@torchship.register_model)

    [project.entry-points."torchship.recipes"]
    my_data = "my_package.data:register"   # or a function that registers when called with no arguments

Each group is loaded once per process, on the first lookup that needs it, so
every command (train, export, parity, ...) sees the same models with no change
to torchship. A package that fails to load is an error naming it, never skipped:
a model that silently vanished would surface later as an "unknown model".
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib import metadata
from types import ModuleType

MODELS_GROUP = "torchship.models"
RECIPES_GROUP = "torchship.recipes"

_loaded: dict[str, Exception | None] = {}  # group -> the error that stopped it (re-raised on every lookup)


class PluginError(ImportError):
    """An installed package's entry point, or an ``--import`` module, could not be loaded."""


def load_group(group: str) -> None:
    """Loads every entry point of ``group`` (once); raises the same PluginError on every call if one failed."""
    if group in _loaded:
        if _loaded[group] is not None:
            raise _loaded[group]  # type: ignore[misc]
        return
    _loaded[group] = None  # set first: a plugin that looks models up while loading must not recurse
    for ep in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, ModuleType) and not _is_registered_builder(obj):
                obj()
        except Exception as e:
            dist = f" (package {ep.dist.name} {ep.dist.version})" if ep.dist else ""
            error = PluginError(
                f"entry point {ep.name} = {ep.value} in group {group}{dist} failed to load: "
                f"{type(e).__name__}: {e}. Fix or uninstall that package."
            )
            error.__cause__ = e
            _loaded[group] = error
            raise error from e


def _is_registered_builder(obj: object) -> bool:
    from torchship.models.registry import _BUILDERS

    try:
        return obj in _BUILDERS
    except TypeError:  # unhashable
        return False


def import_module(name: str) -> ModuleType:
    """Imports ``name`` as ``--import`` does: the current directory is searched first, as ``python -m`` does."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except Exception as e:
        raise PluginError(
            f"cannot import {name!r}: {type(e).__name__}: {e} (searched {cwd} and the installed packages)"
        ) from e
