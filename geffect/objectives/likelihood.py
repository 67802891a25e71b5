"""Likelihood-family objectives: gradient ascent and its relatives.

NLL_i is the mean token NLL of forget example i over its answer tokens (``terms``), and a
batch term is the mean over instances; GA's loss is ``-mean_i NLL_i``, so minimising it
raises the forget NLL. The papers' code averages tokens over the whole batch instead;
the two agree up to how examples of different lengths are weighted.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from geffect.objectives.compose import combine, retain_kl, retain_nll
from geffect.objectives.registry import ObjectiveOutput, objective
from geffect.objectives.terms import instance_mean, sequence_nll, token_logprobs

__all__ = ["ga", "ga_kl", "gd", "idk", "wga", "yao"]

Batch = Mapping[str, torch.Tensor]

_TOFU = "Maini et al. 2024, TOFU: A Task of Fictitious Unlearning for LLMs (COLM 2024)"
_WANG = ("Wang et al. 2025, Rethinking LLM Unlearning Objectives: A Gradient Perspective "
         "and Go Beyond (ICLR 2025)")


def _forget_output(per_instance: torch.Tensor, **diagnostics: torch.Tensor) -> ObjectiveOutput:
    """An output whose loss is the mean of a per-forget-instance term."""
    forget = per_instance.mean()
    return ObjectiveOutput(loss=forget, parts={"forget": forget, **diagnostics}, per_instance=per_instance)


@objective("ga", family="likelihood", paper=_TOFU, formula="L = -E_f[NLL(y|x)]")
def ga(model: torch.nn.Module, forget: Batch) -> ObjectiveOutput:
    """Gradient ascent (GA): descend minus the forget NLL, i.e. raise it.

    L = -E_{(x,y)∈D_f} NLL(y|x), NLL = mean token negative log-likelihood of the answer.
    The baseline of TOFU (Maini et al. 2024); analysed by Wang et al. (2025).
    """
    return _forget_output(-sequence_nll(model, forget))


@objective("gd", family="likelihood", paper=_TOFU,
           formula="L = -E_f[NLL] + retain_weight·E_r[NLL]")
def gd(model: torch.nn.Module, forget: Batch, retain: Batch, retain_weight: float = 1.0) -> ObjectiveOutput:
    """Gradient difference (GD): GA on the forget set plus the NLL on retain data.

    L = -E_f[NLL] + λ·E_r[NLL], λ = ``retain_weight`` (1 in TOFU, Maini et al. 2024).
    """
    return combine(ga(model, forget), retain=(retain_weight, retain_nll(model, retain)))


@objective("ga_kl", family="likelihood", paper=_TOFU,
           formula="L = -E_f[NLL] + kl_weight·E_r[KL(π_ref‖π_θ)]")
def ga_kl(model: torch.nn.Module, forget: Batch, retain: Batch, ref_model: torch.nn.Module,
          kl_weight: float = 1.0) -> ObjectiveOutput:
    """GA with a KL penalty to the frozen original model on retain data (TOFU's "KL").

    L = -E_f[NLL] + λ·E_r[KL(π_ref ‖ π_θ)], the KL of next-token distributions averaged over
    the real tokens of each retain example; λ = ``kl_weight`` = 1 (Maini et al. 2024).
    """
    return combine(ga(model, forget), kl=(kl_weight, retain_kl(model, ref_model, retain)))


@objective("wga", family="likelihood", paper=_WANG,
           formula="L = E_f[mean_t sg(p_t^α)·log p_t],  p_t = π_θ(y_t|x,y_<t)")
def wga(model: torch.nn.Module, forget: Batch, alpha: float = 1.0) -> ObjectiveOutput:
    """Weighted gradient ascent (WGA, Wang et al. 2025).

    L = E_f[ mean_t w_t · log p_t ],  w_t = sg(p_t^α),  p_t = π_θ(y_t | x, y_<t),
    sg = stop-gradient. Each token's ascent step is scaled by its current probability to
    the power α, so tokens that are already unlikely (already forgotten) stop being pushed:
    this damps the 1/p "inverse confidence" factor that makes GA diverge. α = 0 is GA.
    ``parts["token_weight"]`` is the mean w_t over the batch's answer tokens.
    Default α = 1.0 (OpenUnlearning's WGA default); the paper tunes α per setting.
    """
    tokens = token_logprobs(model, forget)
    weights = tokens.logp.detach().exp().pow(alpha)
    per_instance = instance_mean(weights * tokens.logp, tokens.mask)
    mean_weight = weights[tokens.mask].mean().detach()
    return _forget_output(per_instance, token_weight=mean_weight)


@objective("idk", family="likelihood", paper=_TOFU, needs=("idk",),
           formula="L = E_f[NLL(y_idk|x)] + retain_weight·E_r[NLL]")
def idk(model: torch.nn.Module, forget: Batch, retain: Batch, retain_weight: float = 1.0) -> ObjectiveOutput:
    """IDK / preference optimisation (PO): teach refusals on forget questions.

    L = E_f[NLL(y_idk | x)] + λ·E_r[NLL], y_idk a refusal answer ("I don't know ...") for
    forget question x, from ``forget["idk"]``; λ = ``retain_weight`` = 1 (TOFU, Maini et
    al. 2024; called PO by Wang et al. 2025). The forget term is the refusal NLL.
    """
    base = _forget_output(sequence_nll(model, forget["idk"]))
    return combine(base, retain=(retain_weight, retain_nll(model, retain)))


@objective("yao", family="likelihood", needs=("mismatch",),
           paper="Yao et al. 2023, Large Language Model Unlearning (NeurIPS 2024 / arXiv:2310.10683)",
           formula="L = ε1·(-E_f[NLL]) + ε2·E_f[NLL(y_rand|x)] + ε3·E_r[KL(π_ref‖π_θ)]")
def yao(model: torch.nn.Module, forget: Batch, retain: Batch, ref_model: torch.nn.Module,
        forget_weight: float = 0.5, mismatch_weight: float = 1.0, kl_weight: float = 1.0) -> ObjectiveOutput:
    """Yao et al. (2023): GA + random-mismatch NLL + KL to the original model.

    L = ε1·(-E_f[NLL]) + ε2·E_f[NLL(y_rand | x)] + ε3·E_r[KL(π_ref ‖ π_θ)], where y_rand is
    a random answer from normal (retain) data paired with forget question x
    (``forget["mismatch"]``) and the KL is taken on normal (retain) data. Weights ε1, ε2,
    ε3 = 0.5, 1, 1: the defaults of the authors' released code (bad/random/normal weight).
    ``parts``: ``forget`` (the GA term), ``mismatch``, ``kl``.
    """
    base = ga(model, forget)
    base = ObjectiveOutput(loss=forget_weight * base.loss, parts=base.parts, per_instance=base.per_instance)
    return combine(base, mismatch=(mismatch_weight, sequence_nll(model, forget["mismatch"]).mean()),
                   kl=(kl_weight, retain_kl(model, ref_model, retain)))
