"""What a task's evaluation suite is given besides the model: ``EvalContext``, and ``evaluate_task``.

An evaluation function has the signature ``fn(model, tokenizer, ctx) -> dict`` and returns a
flat, JSON-serialisable dict of metrics (floats, ints, strings; NaN where a metric is
undefined). ``ctx`` carries the task, the run's forget and retain splits, the data
(``ctx.split(name)``, ``ctx.heldout(name)``), the untouched target model
(``ctx.original_model()``, loaded on demand, e.g. for fluency or output similarity), the
reference model that never saw the forget data (``ctx.reference``) and the evaluation
options (``max_examples``, ``batch_size``, ``progress`` and suite-specific ``options``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geffect.data.files import is_data_file
from geffect.tasks.source import Row, TaskData
from geffect.tasks.task import Task


@dataclass
class EvalContext:
    """Everything an evaluation suite may use besides the model (see the module docstring)."""

    task: Task
    data: TaskData
    forget: str
    retain: str | None = None
    model_name: str | None = None  # the untouched target the run started from
    reference: Any = None  # a model name / folder, a loaded model, or None
    run_dir: Path | None = None
    max_examples: int | None = None
    batch_size: int = 32
    progress: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    _original: Any = field(default=None, repr=False)

    def split(self, name: str):
        """All rows of split ``name`` of the task (a checked ``datasets.Dataset``)."""
        return self.data.split(name)

    def rows(self, name: str) -> list[Row]:
        """The rows of ``name`` used in training (all but held-out ones), capped at ``max_examples``."""
        return self.limit(self.data.rows(name)[0])

    def heldout(self, name: str) -> list[Row]:
        """The rows of ``name`` kept out of training (empty without a holdout), capped at ``max_examples``."""
        return self.limit(self.data.heldout_rows(name)[0])

    def limit(self, rows: list[Row]) -> list[Row]:
        """The first ``max_examples`` of ``rows`` (all when it is None)."""
        return list(rows) if self.max_examples is None else list(rows)[: self.max_examples]

    def original_model(self):
        """(model, tokenizer) of the untouched target, loaded once (eval mode)."""
        if self._original is None:
            if self.model_name is None:
                raise ValueError(f"task {self.task.name!r}: this evaluation needs the original model; "
                                 "pass model_name= (a run's evaluation sets it from its config)")
            from geffect.models import load

            model, tokenizer = load(self.model_name)
            self._original = (model.eval(), tokenizer)
        return self._original


def default_reference(task: Task, model: str | None, forget: str, retain: str | None,
                      data: str | None) -> str | None:
    """``task.reference_model`` filled in, when it applies: the task's own data and a model that exists."""
    if task.reference_model is None or model is None or data is not None or is_data_file(forget):
        return None
    from geffect.models import SHIPPED_MODELS

    name = task.reference_model.format(model=model, forget=forget, retain=retain)
    return name if name in SHIPPED_MODELS or Path(name).expanduser().is_dir() else None


def make_context(task: Task | str = "tofu", *, forget: str | None = None, retain: str | None = "default",
                 data: str | None = None, model_name: str | None = None, reference: Any = "default",
                 holdout: float | None = None, seed: int = 0, run_dir: str | Path | None = None,
                 max_examples: int | None = None, batch_size: int = 32, progress: bool = True,
                 **options: Any) -> EvalContext:
    """An :class:`EvalContext` with the task's defaults filled in (forget/retain splits, holdout, reference)."""
    from geffect.tasks.registry import get_task

    task = get_task(task)
    forget = forget if forget is not None else task.forget
    retain = task.retain_split(forget) if retain == "default" else retain
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be >= 1, got {max_examples}")
    holdout = task.holdout if holdout is None else holdout
    heldout = {forget: "forget", **({retain: "retain"} if retain is not None else {})}
    source = TaskData(task, data, holdout=holdout, seed=seed, heldout=heldout)
    if reference == "default":
        reference = default_reference(task, model_name, forget, retain, data)
    return EvalContext(task=task, data=source, forget=forget, retain=retain, model_name=model_name,
                       reference=reference, run_dir=Path(run_dir) if run_dir is not None else None,
                       max_examples=max_examples, batch_size=batch_size, progress=progress, options=options)


def run_suite(model: Any, tokenizer: Any, ctx: EvalContext) -> dict[str, Any]:
    """Call the task's evaluation suite (the default one when it has none) and check what it returns."""
    from geffect.evaluation.metrics import name_undefined
    from geffect.tasks.default_eval import default_evaluation

    fn = ctx.task.evaluate or default_evaluation
    result = fn(model, tokenizer, ctx)
    if not isinstance(result, dict):
        raise TypeError(f"task {ctx.task.name!r}: its evaluation returned {type(result).__name__}, expected a dict")
    return name_undefined({"task": ctx.task.name, **result})


def evaluate_task(model: Any, tokenizer: Any, task: Task | str = "tofu", **context: Any) -> dict[str, Any]:
    """The evaluation suite of ``task`` on ``model``: a flat dict of metrics.

    ``context``: keywords of :func:`make_context` (``forget=``, ``retain=``, ``data=``,
    ``model_name=`` — the untouched target, needed by suites that compare against it —,
    ``reference=``, ``max_examples=``, ``batch_size=``, ``progress=``) and suite options.
    """
    return run_suite(model, tokenizer, make_context(task, **context))
