"""Training companions: work a run does beside minimising its objective's loss.

Some objectives need more than a loss function: probe directions fitted on the model before the
first step (``probe_directions``), or term weights re-set from G-effects measured while training
(``meta_cosine_rmu``). Such an objective names a companion when it registers
(``@objective(..., companion="weight_controller")``); the trainer and the Hugging Face callback
build it from this registry and call it at fixed points of a run, so a new companion needs no
change to either:

1. ``prepare(data)`` once the training data exist (e.g. hold validation rows out of training);
2. ``start(context, state)`` once the run directory is claimed, before the first step, with the
   companion's checkpointed state when a run resumes (e.g. fit or load cached probes);
3. every step: ``before_step(step, lr, objective)`` (``objective()`` evaluates the loss on this
   step's first micro-batch), then the loss is called with ``objective_kwargs()`` added to its
   hyper-parameters, and ``history_fields()`` joins the step's history row;
4. ``state_dict()`` goes into every checkpoint; ``close()`` at the end.

Objectives that name no companion get :class:`Companion` itself, which does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["Companion", "CompanionContext", "build_companion", "list_companions", "companion"]


def _identity(value: float) -> float:
    return value


@dataclass
class CompanionContext:
    """What a companion may use of the run: the model being trained, where to cache files, and how to
    run a forward pass the way training does."""

    model: torch.nn.Module
    run_dir: Path | None = None  # None: nothing is cached (e.g. a callback without ``out``)
    is_main: bool = True  # only the main process writes files
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    mean: Callable[[float], float] = _identity  # average of a per-process value over processes
    seed: int = 0


class Companion:
    """Base companion (see the module docstring): every hook does nothing.

    ``spec`` is the objective's :class:`~geffect.objectives.ObjectiveSpec` and ``hparams`` its
    resolved hyper-parameters (defaults plus the run's overrides).
    """

    def __init__(self, spec: Any, hparams: Mapping[str, Any]) -> None:
        self.spec, self.hparams = spec, dict(hparams)

    def prepare(self, data: Any) -> None:
        """Called once the run's :class:`~geffect.training.data.UnlearningData` exists."""

    def start(self, context: CompanionContext, state: Mapping[str, Any] | None = None) -> None:
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
        """Release what the companion holds (hooks, engines)."""


CompanionFactory = Callable[[Any, Mapping[str, Any]], Companion]
_COMPANIONS: dict[str, CompanionFactory] = {}


def registrar(table: dict[str, Any], what: str, name: str, replace: bool = False) -> Callable[[Any], Any]:
    """A decorator that stores its argument in ``table`` under ``name`` (a second, different one raises)."""

    def register(factory: Any) -> Any:
        if name in table and not replace and table[name] is not factory:
            raise ValueError(f"a {what} named {name!r} is already registered; pass replace=True")
        table[name] = factory
        return factory

    return register


def companion(name: str, *, replace: bool = False) -> Callable[[CompanionFactory], CompanionFactory]:
    """Register a companion factory ``factory(spec, hparams) -> Companion`` under ``name`` (decorator)."""
    return registrar(_COMPANIONS, "training companion", name, replace)


def list_companions() -> list[str]:
    """Names of the registered companions."""
    _load_builtins()
    return list(_COMPANIONS)


def build_companion(spec: Any, hparams: Mapping[str, Any]) -> Companion:
    """The companion the objective ``spec`` names (a do-nothing :class:`Companion` if none)."""
    if not spec.companion:
        return Companion(spec, hparams)
    _load_builtins()
    if spec.companion not in _COMPANIONS:
        from geffect.training.config import ConfigError

        raise ConfigError(f"objective {spec.name!r} needs the training companion {spec.companion!r}, which is not "
                          f"registered; known companions: {', '.join(_COMPANIONS) or 'none'}")
    return _COMPANIONS[spec.companion](spec, hparams)


def _load_builtins() -> None:
    """Import the modules that register the built-in companions."""
    from geffect.training import controllers, probing  # noqa: F401
