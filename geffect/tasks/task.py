"""``Task``: an unlearning problem as a small object — its forget and retain data, default probes,
evaluation suite and reference model.

A run names its task (``UnlearnConfig.task``, recorded in ``config.yaml``), so evaluation,
reports and comparisons need no flags. Split names resolve, in order, to an existing data file
(``.jsonl``/``.json``/``.csv``/``.parquet``), an entry of ``Task.splits`` (a file, a list of
rows or a ``datasets.Dataset``), the task's ``reader`` (``tofu``: the embedded world or a TOFU
folder), a file ``<split>.<suffix>`` in the task's data folder (``data/tasks/<name>/`` unless
``data`` says otherwise; a ``data`` that is a hub dataset id gives its split of that name), and last
a hub dataset ``owner/name[:config[:split]]``; every one is read and checked by
:func:`geffect.data.load_rows`.

A user registers a task in a few lines::

    from geffect.tasks import Task, register_task

    register_task(Task(
        name="my_books",
        description="forget one of my books, keep the others",
        forget="book1", retain="other_books",     # split names ...
        splits={"book1": "books/book1.jsonl",     # ... mapped to files (or lists of rows)
                "other_books": "books/others.csv"},
    ))
    geffect.unlearn("npo", task="my_books", steps=30, out="runs/npo-book1").evaluate()

A task kept in a file or module can be named ``"path/to/tasks.py:TASK"`` or ``"package.module:TASK"``
wherever a task name is taken (``--task``, ``UnlearnConfig.task``); a run records a file's absolute
path, so that its task is found again from any process and directory.
Without ``evaluate`` a task gets the default evaluation (mean NLL and greedy ROUGE-L of the
forget and retain rows, see :mod:`geffect.tasks.default_eval`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geffect.tasks.context import EvalContext

# evaluate(model, tokenizer, ctx) -> flat dict of metrics (floats, ints, strings)
Evaluator = Callable[[Any, Any, "EvalContext"], dict[str, Any]]
# reader(split, data) -> datasets.Dataset, for tasks whose splits are not plain files (tofu)
Reader = Callable[[str, "str | None"], Any]


@dataclass(frozen=True)
class Task:
    """An unlearning task (see the module docstring for how its splits resolve).

    ``forget`` / ``retain``: the default forget and retain split names (``retain_for`` maps
    another forget split to its retain split, as TOFU's ``forget05`` → ``retain95``).
    ``probes``: extra default probes (name → split) recorded beside ``forget`` and ``retain``.
    ``evaluate``: the evaluation suite ``fn(model, tokenizer, ctx) -> dict``; None: the default
    NLL / ROUGE-L suite. ``reference_model``: a model that never saw the forget data, as a
    name that may use ``{model}``, ``{forget}``, ``{retain}`` (used only when it is a shipped
    model or an existing folder). ``pools``: forget view → split of replacement targets (e.g.
    ``{"idk": "refusals", "mismatch": "normal_answers"}``; default: the world's refusals and the
    run's retain rows). ``holdout``: default fraction of the forget and retain rows kept out of
    training for evaluation.
    """

    name: str
    description: str
    forget: str
    retain: str | None = None
    probes: Mapping[str, str] = field(default_factory=dict)
    evaluate: Evaluator | None = None
    reference_model: str | None = None
    data: str | None = None
    splits: Mapping[str, Any] = field(default_factory=dict)
    pools: Mapping[str, str] = field(default_factory=dict)
    holdout: float = 0.0
    retain_for: Callable[[str], str | None] | None = None
    reader: Reader | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"a task name must be an identifier (letters, digits, _), got {self.name!r}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"task {self.name!r}: holdout must be in [0, 1), got {self.holdout}")
        if self.evaluate is not None and not callable(self.evaluate):
            raise TypeError(f"task {self.name!r}: evaluate must be a function (model, tokenizer, ctx) -> dict")

    # -- data -----------------------------------------------------------------------------------------

    def data_folder(self, data: str | None = None) -> Path:
        """Folder of the task's split files: ``data`` if given, else ``Task.data``, else ``data/tasks/<name>``."""
        from geffect.data.paths import data_root

        chosen = data if data is not None else self.data
        return Path(chosen).expanduser() if chosen is not None else data_root() / "tasks" / self.name

    def retain_split(self, forget: str) -> str | None:
        """The retain split that goes with ``forget``: ``retain_for(forget)`` if set, else ``retain``."""
        return self.retain_for(forget) if self.retain_for is not None else self.retain

    def default_probes(self, forget: str, retain: str | None) -> dict[str, str]:
        """The probes a run records when it names none: forget, retain (if any) and the task's extras."""
        probes = {"forget": forget}
        if retain is not None:
            probes["retain"] = retain
        return {**probes, **self.probes}

    def split(self, name: str, data: str | None = None):
        """The checked rows of split ``name`` as a ``datasets.Dataset`` (see the module docstring)."""
        from geffect.tasks.source import TaskData

        return TaskData(self, data).split(name)

    def evaluation_name(self) -> str:
        """A one-line description of the evaluation suite (for ``geffect tasks``)."""
        from geffect.tasks.default_eval import default_evaluation

        fn = self.evaluate or default_evaluation
        doc = (fn.__doc__ or "").strip().splitlines()
        return doc[0].rstrip(".") if doc else getattr(fn, "__name__", repr(fn))
