"""geffect: what an LLM-unlearning objective does to a model, where and when.

The G-effect of an unlearning objective L_u on data D is ``∇θR(D)ᵀ ∇θL_u``
(Wang et al., ICLR 2025): to first order, minus how much one gradient step of
L_u changes the risk R (per-example NLL) on D. geffect measures it exactly per
step, per layer and per instance, trains the objectives and reports the results.

Public names are imported lazily so that ``import geffect`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "gradient_effect": "geffect.effects",
    "EffectProbe": "geffect.effects",
    "token_effect": "geffect.effects",
    "pairwise_effect": "geffect.effects",
    "load_world": "geffect.data",
    "load_tofu": "geffect.data",
    "encode_qa": "geffect.data",
    "encode_prompt": "geffect.data",
    "load_model": "geffect.models",
    "objective": "geffect.objectives",
    "get_objective": "geffect.objectives",
    "list_objectives": "geffect.objectives",
    "unlearn": "geffect.training",
    "Task": "geffect.tasks",
    "get_task": "geffect.tasks",
    "list_tasks": "geffect.tasks",
    "register_task": "geffect.tasks",
    "evaluate_task": "geffect.tasks",
    "encode_row": "geffect.data",
    "load_rows": "geffect.data",
    "Run": "geffect.training",
    "evaluate": "geffect.evaluation",
    "plot": "geffect.reporting.plots",
    "report": "geffect.reporting",
    "diagnose": "geffect.reporting",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'geffect' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = module if name == "plot" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
