"""Training procedures: work a run does beside minimising its objective's loss.

Some objectives need more than a loss function: probe directions fitted on the model before the
first step (``probe_directions``), or term weights re-set from G-effects measured while training
(``meta_cosine_rmu``). Such an objective names a procedure when it registers
(``@objective(..., procedure="weight_controller")``); the trainer and the Hugging Face callback
build it from this registry and call it at fixed points of a run, so a new procedure needs no
change to either:

1. ``prepare(data)`` once the training data exist (e.g. hold validation rows out of training);
2. ``start(context, state)`` once the run directory is claimed, before the first step, with the
   procedure's checkpointed state when a run resumes (e.g. fit or load cached probes);
3. every step: ``before_step(step, lr, objective)`` (``objective()`` evaluates the loss on this
   step's first micro-batch), then the loss is called with ``objective_kwargs()`` added to its
   hyper-parameters, and ``history_fields()`` joins the step's history row;
4. ``state_dict()`` goes into every checkpoint; ``close()`` at the end.

Objectives that name no procedure get :class:`Procedure` itself, which does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["Procedure", "ProcedureContext", "build_procedure", "list_procedures", "procedure"]


def _identity(value: float) -> float:
    return value


@dataclass
class ProcedureContext:
    """What a procedure may use of the run: the model being trained, where to cache files, and how to
    run a forward pass the way training does."""

    model: torch.nn.Module
    run_dir: Path | None = None  # None: nothing is cached (e.g. a callback without ``out``)
    is_main: bool = True  # only the main process writes files
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    mean: Callable[[float], float] = _identity  # average of a per-process value over processes
    seed: int = 0
    extras: dict[str, Any] = field(default_factory=dict)


class Procedure:
    """Base procedure (see the module docstring): every hook does nothing.

    ``spec`` is the objective's :class:`~geffect.objectives.ObjectiveSpec` and ``hparams`` its
    resolved hyper-parameters (defaults plus the run's overrides).
    """

    def __init__(self, spec: Any, hparams: Mapping[str, Any]) -> None:
        self.spec, self.hparams = spec, dict(hparams)

    def prepare(self, data: Any) -> None:
        """Called once the run's :class:`~geffect.training.data.UnlearningData` exists."""

    def start(self, context: ProcedureContext, state: Mapping[str, Any] | None = None) -> None:
        """Called before the first step; ``state`` is what :meth:`state_dict` returned at the checkpoint."""

    def objective_kwargs(self) -> dict[str, Any]:
        """Keyword arguments added to (or overriding) the objective's hyper-parameters this step."""
        return {}

    def before_step(self, step: int, lr: float, objective: Callable[[], Any]) -> None:
        """Called before step ``step`` computes its loss; ``objective()`` returns that step's
        :class:`~geffect.objectives.ObjectiveOutput` on its first micro-batch (graph attached)."""

    def history_fields(self) -> dict[str, float]:
        """Values for this step's row of ``history.parquet``."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`start` needs to resume exactly (plain containers, floats, tensors)."""
        return {}

    def close(self) -> None:
        """Release what the procedure holds (hooks, engines)."""


ProcedureFactory = Callable[[Any, Mapping[str, Any]], Procedure]
_PROCEDURES: dict[str, ProcedureFactory] = {}


def registrar(table: dict[str, Any], what: str, name: str, replace: bool = False) -> Callable[[Any], Any]:
    """A decorator that stores its argument in ``table`` under ``name`` (a second, different one raises)."""

    def register(factory: Any) -> Any:
        if name in table and not replace and table[name] is not factory:
            raise ValueError(f"a {what} named {name!r} is already registered; pass replace=True")
        table[name] = factory
        return factory

    return register


def procedure(name: str, *, replace: bool = False) -> Callable[[ProcedureFactory], ProcedureFactory]:
    """Register a procedure factory ``factory(spec, hparams) -> Procedure`` under ``name`` (decorator)."""
    return registrar(_PROCEDURES, "training procedure", name, replace)


def list_procedures() -> list[str]:
    """Names of the registered procedures."""
    _load_builtins()
    return list(_PROCEDURES)


def build_procedure(spec: Any, hparams: Mapping[str, Any]) -> Procedure:
    """The procedure the objective ``spec`` names (a do-nothing :class:`Procedure` if none)."""
    if not spec.procedure:
        return Procedure(spec, hparams)
    _load_builtins()
    if spec.procedure not in _PROCEDURES:
        from geffect.training.config import ConfigError

        raise ConfigError(f"objective {spec.name!r} needs the training procedure {spec.procedure!r}, which is not "
                          f"registered; known procedures: {', '.join(_PROCEDURES) or 'none'}")
    return _PROCEDURES[spec.procedure](spec, hparams)


def _load_builtins() -> None:
    """Import the modules that register the built-in procedures."""
    from geffect.training import controllers, probing  # noqa: F401
