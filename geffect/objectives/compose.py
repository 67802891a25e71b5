"""Composing objectives: a forget objective plus weighted retain terms.

Retain variants (GD = GA + retain NLL, NPO+KL = NPO + KL to the reference on retain
data, ...) are built with :func:`combine`, which adds weighted scalar terms to an
:class:`ObjectiveOutput` and records each unweighted term in ``parts`` under its name.
The retain terms themselves are here too, so every objective uses the same definition.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from geffect.objectives.registry import ObjectiveOutput
from geffect.objectives.terms import kl_to_reference, sequence_nll

__all__ = ["combine", "retain_kl", "retain_nll"]


def combine(base: ObjectiveOutput, **terms: tuple[float, torch.Tensor]) -> ObjectiveOutput:
    """``base`` plus ``weight * value`` for each ``name=(weight, value)`` term.

    ``parts[name]`` holds the unweighted ``value``; ``per_instance`` is kept from ``base``.
    """
    loss = base.loss
    parts = dict(base.parts)
    for name, (weight, value) in terms.items():
        if name in parts:
            raise ValueError(f"term {name!r} is already a part of this objective: {sorted(parts)}")
        loss = loss + weight * value
        parts[name] = value
    return ObjectiveOutput(loss=loss, parts=parts, per_instance=base.per_instance)


def retain_nll(model: torch.nn.Module, retain: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean over retain instances of their mean token NLL (the GD retain term)."""
    return sequence_nll(model, retain).mean()


def retain_kl(model: torch.nn.Module, ref_model: torch.nn.Module,
              retain: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean over retain instances of KL(π_ref ‖ π_θ) (see ``terms.kl_to_reference``)."""
    return kl_to_reference(model, ref_model, retain).mean()
