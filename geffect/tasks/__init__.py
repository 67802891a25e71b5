"""geffect.tasks: unlearning problems as registered objects (see :mod:`geffect.tasks.task`).

- :class:`Task`, :func:`register_task`, :func:`get_task`, :func:`list_tasks`: the registry.
- :class:`TaskData`: a task's splits, read and checked once; held-out rows; view pools.
- :func:`evaluate_task`, :class:`EvalContext`: a task's evaluation suite on a model.
- Built-in: ``tofu`` (the default), ``files`` (a user's own forget/retain files), and the generated
  tasks ``hazard`` (WMDP-style), ``toxicity``, ``harm`` (Yao et al. 2024) and ``book`` (MUSE-style).
"""

from geffect.tasks.book import BOOK
from geffect.tasks.builtin import FILES, TOFU
from geffect.tasks.context import EvalContext, evaluate_task, make_context
from geffect.tasks.default_eval import default_evaluation
from geffect.tasks.harm import HARM
from geffect.tasks.hazard import HAZARD
from geffect.tasks.registry import UnknownTask, get_task, list_tasks, register_task
from geffect.tasks.source import TaskData, UnknownSplit
from geffect.tasks.task import Task
from geffect.tasks.toxicity import TOXICITY

DEFAULT_TASK = "tofu"
register_task(TOFU)
register_task(FILES)
for _task in (HAZARD, TOXICITY, HARM, BOOK):
    register_task(_task)

__all__ = [
    "DEFAULT_TASK", "EvalContext", "Task", "TaskData", "UnknownSplit", "UnknownTask", "default_evaluation",
    "evaluate_task", "get_task", "list_tasks", "make_context", "register_task",
]
