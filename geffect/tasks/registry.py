"""The task registry: ``register_task``, ``get_task`` (close-match errors), ``list_tasks``."""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path

from geffect.errors import InputError
from geffect.tasks.task import Task

_REGISTRY: dict[str, Task] = {}
_FILE_MODULES: dict[tuple[Path, int], object] = {}


class UnknownTask(InputError, KeyError):
    """A task name that is neither registered nor an importable ``module:ATTR`` / ``file.py:ATTR``."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def register_task(task: Task, replace: bool = False) -> Task:
    """Register ``task`` under its name and return it.

    Registering an equal task again is a no-op; a different task under a taken name raises
    unless ``replace=True``.
    """
    if not isinstance(task, Task):
        raise TypeError(f"register_task expects a geffect.tasks.Task, got {type(task).__name__}")
    if task.name in _REGISTRY and not replace and _REGISTRY[task.name] != task:
        raise ValueError(f"a task named {task.name!r} is already registered; pick another name or pass replace=True")
    _REGISTRY[task.name] = task
    return task


def _file_module(path: Path):
    """The Python file ``path`` imported once per version of it (a task module may register its tasks,
    and a re-import would make new, unequal suite functions)."""
    from geffect.objectives.loading import import_file

    path = path.expanduser().resolve()
    if not path.is_file():
        return import_file(path)  # raises the one-line error naming the missing file
    key = (path, path.stat().st_mtime_ns)
    if key not in _FILE_MODULES:
        _FILE_MODULES[key] = import_file(path)
    return _FILE_MODULES[key]


def get_task(name: str | Task) -> Task:
    """The task registered as ``name``, or the Task that ``"package.module:ATTR"`` or ``"path/to/file.py:ATTR"``
    names (a file is imported as a module, as for objectives); a Task passes through."""
    if isinstance(name, Task):
        return name
    if not isinstance(name, str):
        raise UnknownTask(f"a task is given by name, got {type(name).__name__}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        from geffect.errors import ObjectiveError
        from geffect.objectives.loading import looks_like_path

        source, _, attr = name.rpartition(":")
        try:
            module = _file_module(Path(source)) if looks_like_path(source) else importlib.import_module(source)
            value = getattr(module, attr)
        except (ImportError, AttributeError, ObjectiveError) as err:
            raise UnknownTask(f"cannot import task {name!r}: {err}") from None
        if not isinstance(value, Task):
            raise UnknownTask(f"{name!r} is a {type(value).__name__}, not a geffect.tasks.Task")
        return value
    close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownTask(f"unknown task {name!r}{hint}; known tasks: {', '.join(_REGISTRY)} (a task registered in "
                      "Python is known in that process only: name it 'path/to/file.py:TASK' or 'package.module:TASK' "
                      "to use it anywhere)")


def list_tasks() -> list[str]:
    """Names of the registered tasks, in registration order (built-ins first)."""
    return list(_REGISTRY)
