"""O-LoRA: any objective plus a penalty keeping the training LoRA module orthogonal to earlier ones.

Wang et al. 2023 ("Orthogonal Subspace Learning for Language Model Continual Learning", Findings
of EMNLP 2023) train a new LoRA module per task and penalise the overlap of its down-projection
``A_i`` (peft's ``lora_A``, shape r × d_in) with those of the frozen earlier modules:
``λ₁ Σ_modules Σ_{j<i} Σ |A_j A_iᵀ|`` (entrywise absolute values; ``squared=True`` uses squares,
as in the O-LoRA paper). Xie et al. 2025 (Reveal and Release) use it for iterative unlearning; the
form with absolute values is issue #11's reading.

The training module is the adapter whose ``lora_A`` requires grad; every other adapter at the same
layer is an earlier (frozen) one — the layout :func:`geffect.training.stacking.stack_lora` builds.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from geffect.objectives.compose import combine
from geffect.objectives.registry import ObjectiveOutput, get_objective, objective

__all__ = ["lora_down_projections", "olora", "orthogonality_penalty"]

_OLORA = ("Wang et al. 2023, Orthogonal Subspace Learning for Language Model Continual Learning "
          "(O-LoRA, Findings of EMNLP 2023); used for unlearning by Xie et al. 2025, Reveal and Release "
          "(Findings of EMNLP 2025, arXiv:2509.14624)")


def lora_down_projections(model: nn.Module) -> Iterator[tuple[str, torch.Tensor, list[torch.Tensor]]]:
    """Per LoRA-wrapped module: (its path, the training ``A_i``, the frozen earlier ``A_j``)."""
    for path, module in model.named_modules():
        down = getattr(module, "lora_A", None)
        if not isinstance(down, nn.ModuleDict) or not down:
            continue
        weights = [m.weight for m in down.values()]
        training = [w for w in weights if w.requires_grad]
        if len(training) > 1:
            raise ValueError(f"{path} has {len(training)} trainable LoRA modules; O-LoRA trains one at a time")
        if training:
            yield path, training[0], [w for w in weights if not w.requires_grad]


def orthogonality_penalty(model: nn.Module, squared: bool = False) -> torch.Tensor:
    """``Σ_modules Σ_j Σ |A_j A_iᵀ|`` (or ``Σ (A_j A_iᵀ)²``) between the training and earlier modules."""
    total = None
    for _, current, earlier in lora_down_projections(model):
        for frozen in earlier:
            overlap = frozen.to(current.dtype) @ current.T
            term = overlap.pow(2).sum() if squared else overlap.abs().sum()
            total = term if total is None else total + term
    if total is None:  # no earlier module (first iteration) or no LoRA at all
        param = next(model.parameters())
        return param.new_zeros(())
    return total


@objective("olora", family="parameter-efficient", paper=_OLORA,
           formula="L = L_base + λ₁·Σ_modules Σ_{j<i} Σ|A_j A_iᵀ|  (A: LoRA down-projections; i training, j frozen)")
def olora(model: nn.Module, forget: Mapping[str, Any], retain: Mapping[str, Any] | None = None,
          ref_model: nn.Module | None = None, base: str = "npo_gd", lambda1: float = 0.5,
          squared: bool = False, base_hparams: Mapping[str, Any] | None = None) -> ObjectiveOutput:
    """The registered objective ``base`` plus the O-LoRA orthogonality penalty (part ``orthogonality``).

    ``lambda1`` defaults to O-LoRA's 0.5; ``base_hparams`` go to the base objective. The base may
    not need forget views (``olora`` declares none).
    """
    spec = get_objective(base)
    if spec.needs:
        raise ValueError(f"olora cannot wrap {base!r}: it needs forget views {list(spec.needs)}")
    out = spec(model, forget, retain if spec.uses_retain else None, ref_model if spec.uses_ref_model else None,
               **dict(base_hparams or {}))
    return combine(out, orthogonality=(lambda1, orthogonality_penalty(model, squared)))
