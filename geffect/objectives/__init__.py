"""Unlearning objectives: a registry of plain loss functions and the built-in losses.

``@objective("name")`` registers ``fn(model, forget, retain=None, ref_model=None,
**hparams) -> ObjectiveOutput``; ``get_objective(name)`` returns its
:class:`ObjectiveSpec` (call it like the function, with inputs checked),
``list_objectives()`` the names and ``describe(name)`` the formula, paper and defaults.

Built-ins (losses are minimised): likelihood family ``ga``, ``gd``, ``ga_kl``, ``wga``,
``idk``, ``yao``; preference family ``npo``, ``npo_gd``, ``npo_kl``, ``simnpo``, ``tnpo``,
``wtnpo``, ``dpo``; representation family ``rmu``, ``rr``; ``olora`` (any of them plus the O-LoRA
orthogonality penalty between stacked LoRA modules); and the language-function objectives of
Atil et al. 2026 as this project reads them: ``cosine_rmu``, ``meta_cosine_rmu`` (hazardous
knowledge) and ``probe_directions`` (toxicity). Their building blocks
(token log-probs, per-instance NLL, KL to a reference, hidden states) are in ``terms``
and the retain terms and :func:`combine` in ``compose``.
"""

from __future__ import annotations

import importlib

from geffect.objectives.compose import combine, retain_kl, retain_nll
from geffect.objectives.registry import (
    ObjectiveOutput,
    ObjectiveSpec,
    describe,
    get_objective,
    list_objectives,
    objective,
    resolve_objective,
)

# Importing the built-in modules registers their objectives, in this order (the listing order).
BUILTIN_MODULES = ("likelihood", "orthogonal", "preference", "representation", "cosine_rmu", "probe_directions")
for _module in BUILTIN_MODULES:
    importlib.import_module(f"geffect.objectives.{_module}")

__all__ = [
    "ObjectiveOutput",
    "ObjectiveSpec",
    "combine",
    "describe",
    "get_objective",
    "list_objectives",
    "objective",
    "resolve_objective",
    "retain_kl",
    "retain_nll",
]
