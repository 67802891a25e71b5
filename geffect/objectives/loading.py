"""Objectives named by reference: ``path/to/file.py:fn``, ``package.module:fn`` or a registered name.

Every entry point (``geffect.unlearn``, ``geffect unlearn --objective``, ``geffect diagnose``)
resolves a string through :func:`load_objective`, so both forms work everywhere. A file is
imported as a module with ``importlib`` (no source string is executed); the run's config
stores the reference with the file's absolute path (:func:`objective_reference`), so a
resume or a report finds the same function from any working directory.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geffect.errors import ObjectiveError

USER_MODULE_PREFIX = "_geffect_user_"


def looks_like_path(source: str) -> bool:
    """Whether the module part of a ``source:attr`` reference is a file path rather than a module name."""
    return source.endswith(".py") or "/" in source or "\\" in source or Path(source).is_file()


def _split(ref: str) -> tuple[str, str]:
    source, sep, attr = ref.rpartition(":")
    if not sep or not source or not attr:
        raise ObjectiveError(f"{ref!r}: expected 'path/to/module.py:function' or 'package.module:function' "
                             "with both parts given")
    return source, attr


def import_file(path: Path) -> Any:
    """Import the Python file ``path`` as a fresh module (re-importing picks up edits)."""
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ObjectiveError(f"no such Python file: {str(path)!r}")
    name = USER_MODULE_PREFIX + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ObjectiveError(f"cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so that dataclasses, pickling and tracebacks can find it
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(name, None)
        raise ObjectiveError(f"importing {str(path)!r} failed: {type(err).__name__}: {err}") from err
    return module


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ObjectiveError(f"cannot import module {name!r}: {err}") from err


def load_objective(ref: str) -> Callable[..., Any]:
    """The objective function named by ``ref`` (see the module docstring).

    ``function`` may be dotted (``Class.method``). Raises :class:`ObjectiveError` saying what
    could not be found.
    """
    if ":" not in ref:
        from geffect.objectives.registry import get_objective, list_objectives

        if ref in list_objectives():
            return get_objective(ref).fn
        from geffect.sources import closest

        near = closest(ref, list_objectives())
        hint = f"did you mean {near!r}? " if near else ""
        raise ObjectiveError(f"unknown objective {ref!r}: neither 'path/to/module.py:function', "
                             f"'package.module:function' nor a registered objective ({hint}known: "
                             f"{', '.join(list_objectives())})")
    source, attr = _split(ref)
    module = import_file(Path(source)) if looks_like_path(source) else _import_module(source)
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            found = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_"))
            raise ObjectiveError(f"{source!r} has no {attr!r}; functions defined there: {', '.join(found) or 'none'}")
        value = getattr(value, part)
    if not callable(value):
        raise ObjectiveError(f"{ref!r} is a {type(value).__name__}, not a function")
    return value


def objective_reference(ref: str | Callable[..., Any]) -> str:
    """The reference a config stores: registered names unchanged, files by absolute path, functions
    as ``module:qualname`` (a function imported from a file as ``file.py:qualname``)."""
    if callable(ref):
        module = sys.modules.get(getattr(ref, "__module__", "") or "")
        path = getattr(module, "__file__", None)
        if module is not None and module.__name__.startswith(USER_MODULE_PREFIX) and path:
            return f"{Path(path).resolve()}:{ref.__qualname__}"
        return f"{ref.__module__}:{ref.__qualname__}"
    return file_reference(ref)


def file_reference(ref: str) -> str:
    """``path/to/file.py:attr`` with the file's absolute path; any other reference unchanged."""
    if ":" in ref:
        source, attr = _split(ref)
        if looks_like_path(source):
            return f"{Path(source).expanduser().resolve()}:{attr}"
    return ref
