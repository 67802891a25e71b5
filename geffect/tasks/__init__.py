"""geffect.tasks: unlearning problems as registered objects (see :mod:`geffect.tasks.task`).

- :class:`Task`, :func:`register_task`, :func:`get_task`, :func:`list_tasks`: the registry.
- :class:`TaskData`: a task's splits, read and checked once; held-out rows; view pools.
- :func:`evaluate_task`, :class:`EvalContext`: a task's evaluation suite on a model.
- Built-in: ``tofu`` (the default) and ``files`` (a user's own forget/retain files).
"""

from geffect.tasks.builtin import FILES, TOFU
from geffect.tasks.context import EvalContext, evaluate_task, make_context
from geffect.tasks.default_eval import default_evaluation
from geffect.tasks.registry import UnknownTask, get_task, list_tasks, register_task
from geffect.tasks.source import TaskData, UnknownSplit
from geffect.tasks.task import Task

DEFAULT_TASK = "tofu"
register_task(TOFU)
register_task(FILES)

__all__ = [
    "DEFAULT_TASK", "EvalContext", "Task", "TaskData", "UnknownSplit", "UnknownTask", "default_evaluation",
    "evaluate_task", "get_task", "list_tasks", "make_context", "register_task",
]
