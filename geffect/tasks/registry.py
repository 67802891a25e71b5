"""The task registry: ``register_task``, ``get_task`` (close-match errors), ``list_tasks``."""

from __future__ import annotations

import difflib
import importlib

from geffect.errors import InputError
from geffect.tasks.task import Task

_REGISTRY: dict[str, Task] = {}


class UnknownTask(InputError, KeyError):
    """A task name that is neither registered nor an importable ``module:attribute``."""

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


def get_task(name: str | Task) -> Task:
    """The task registered as ``name`` (or ``"package.module:attribute"`` naming a Task; a Task passes through)."""
    if isinstance(name, Task):
        return name
    if not isinstance(name, str):
        raise UnknownTask(f"a task is given by name, got {type(name).__name__}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            value = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise UnknownTask(f"cannot import task {name!r}: {err}") from None
        if not isinstance(value, Task):
            raise UnknownTask(f"{name!r} is a {type(value).__name__}, not a geffect.tasks.Task")
        return value
    close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownTask(f"unknown task {name!r}{hint}; known tasks: {', '.join(_REGISTRY)} (a task registered in "
                      "Python is known in that process only: name it 'package.module:TASK' to use it anywhere)")


def list_tasks() -> list[str]:
    """Names of the registered tasks, in registration order (built-ins first)."""
    return list(_REGISTRY)
