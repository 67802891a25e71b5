"""Preference-family objectives: NPO and its variants, SimNPO, token-wise NPO, DPO.

Notation: log π(y|x) is the *sequence* log-likelihood of the answer (the sum over its
tokens), log p_t the log-probability of answer token t, π_ref the frozen original model,
σ the logistic function and softplus(z) = log(1 + e^z). Each loss is written in the form
whose value is the paper's loss and whose gradient is the paper's update.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from geffect.objectives.compose import combine, retain_kl, retain_nll
from geffect.objectives.registry import ObjectiveOutput, objective
from geffect.objectives.terms import (
    TokenLogProbs,
    instance_mean,
    reference_logprobs,
    token_logprobs,
)

__all__ = ["dpo", "npo", "npo_gd", "npo_kl", "simnpo", "tnpo", "wtnpo"]

Batch = Mapping[str, torch.Tensor]

_NPO = ("Zhang et al. 2024, Negative Preference Optimization: From Catastrophic Collapse to "
        "Effective Unlearning (COLM 2024)")
_SIMNPO = ("Fan et al. 2024, Simplicity Prevails: Rethinking Negative Preference Optimization "
           "for LLM Unlearning (arXiv:2410.07163)")
_WANG = ("Wang et al. 2025, Rethinking LLM Unlearning Objectives: A Gradient Perspective "
         "and Go Beyond (ICLR 2025)")
_DPO = ("Rafailov et al. 2023, Direct Preference Optimization; as an unlearning baseline with "
        "refusals preferred: Maini et al. 2024 (TOFU), Zhang et al. 2024 (NPO)")


def _policy_and_reference(model: torch.nn.Module, ref_model: torch.nn.Module,
                          batch: Batch) -> tuple[TokenLogProbs, TokenLogProbs]:
    return token_logprobs(model, batch), reference_logprobs(ref_model, batch)


def _mean_over_tokens(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return values[mask].mean().detach()


@objective("npo", family="preference", paper=_NPO,
           formula="L = (2/β)·E_f[log(1 + (π_θ(y|x)/π_ref(y|x))^β)]")
def npo(model: torch.nn.Module, forget: Batch, ref_model: torch.nn.Module, beta: float = 0.1) -> ObjectiveOutput:
    """Negative preference optimisation (NPO, Zhang et al. 2024).

    L = (2/β)·E_f[ log(1 + (π_θ(y|x)/π_ref(y|x))^β) ] = (2/β)·E_f[softplus(β·log-ratio)],
    DPO with only a rejected answer. Its gradient is GA's scaled per instance by
    w = 2σ(β·(log π_θ - log π_ref)) ∈ (0, 2), which vanishes as the answer becomes unlikely;
    ``parts["npo_weight"]`` is the batch mean of w. β = 0.1 (the paper's TOFU setting).
    With θ = θ_ref the loss is (2/β)·log 2 and w = 1.
    """
    policy, reference = _policy_and_reference(model, ref_model, forget)
    log_ratio = policy.sequence() - reference.sequence()
    per_instance = (2.0 / beta) * F.softplus(beta * log_ratio)
    weight = 2.0 * torch.sigmoid(beta * log_ratio).detach()
    forget_term = per_instance.mean()
    return ObjectiveOutput(loss=forget_term, parts={"forget": forget_term, "npo_weight": weight.mean()},
                           per_instance=per_instance)


@objective("npo_gd", family="preference", paper=_NPO,
           formula="L = NPO + retain_weight·E_r[NLL]")
def npo_gd(model: torch.nn.Module, forget: Batch, retain: Batch, ref_model: torch.nn.Module,
           beta: float = 0.1, retain_weight: float = 1.0) -> ObjectiveOutput:
    """NPO plus the retain NLL (NPO+RT in Zhang et al. 2024; retain weight 1)."""
    return combine(npo(model, forget, ref_model, beta=beta), retain=(retain_weight, retain_nll(model, retain)))


@objective("npo_kl", family="preference", paper=_NPO,
           formula="L = NPO + kl_weight·E_r[KL(π_ref‖π_θ)]")
def npo_kl(model: torch.nn.Module, forget: Batch, retain: Batch, ref_model: torch.nn.Module,
           beta: float = 0.1, kl_weight: float = 1.0) -> ObjectiveOutput:
    """NPO plus the KL to the original model on retain data (NPO+KL, Zhang et al. 2024; weight 1)."""
    return combine(npo(model, forget, ref_model, beta=beta),
                   kl=(kl_weight, retain_kl(model, ref_model, retain)))


@objective("simnpo", family="preference", paper=_SIMNPO,
           formula="L = (2/β)·E_f[log(1 + exp(γ - β·NLL(y|x)/|y|))]")
def simnpo(model: torch.nn.Module, forget: Batch, beta: float = 2.5, gamma: float = 0.0) -> ObjectiveOutput:
    """SimNPO (Fan et al. 2024): reference-free, length-normalised NPO.

    L = -(2/β)·E_f[log σ(-(β/|y|)·log π_θ(y|x) - γ)] = (2/β)·E_f[softplus(γ - β·n̄)], with
    n̄ = -log π_θ(y|x)/|y| the mean token NLL of the answer and γ a reward margin. Gradient
    weight per instance 2σ(γ - β·n̄) (``parts["simnpo_weight"]``, batch mean). β = 2.5,
    γ = 0 (the paper's TOFU forget05 setting). The paper's TOFU runs add a retain NLL
    (weights 0.1375 forget / 1 retain), which is not included here.
    """
    mean_nll = -token_logprobs(model, forget).mean()
    per_instance = (2.0 / beta) * F.softplus(gamma - beta * mean_nll)
    weight = 2.0 * torch.sigmoid(gamma - beta * mean_nll).detach()
    forget_term = per_instance.mean()
    return ObjectiveOutput(loss=forget_term, parts={"forget": forget_term, "simnpo_weight": weight.mean()},
                           per_instance=per_instance)


def _token_npo(model: torch.nn.Module, forget: Batch, ref_model: torch.nn.Module, beta: float,
               alpha: float | None) -> ObjectiveOutput:
    """Token-wise NPO terms, optionally weighted by sg(p_t^α) (shared by TNPO and WTNPO)."""
    policy, reference = _policy_and_reference(model, ref_model, forget)
    log_ratio = policy.logp - reference.logp
    token_loss = (2.0 / beta) * F.softplus(beta * log_ratio)
    weight = 2.0 * torch.sigmoid(beta * log_ratio).detach()
    if alpha is not None:
        confidence = policy.logp.detach().exp().pow(alpha)
        token_loss = confidence * token_loss
        weight = confidence * weight
    per_instance = instance_mean(token_loss, policy.mask)
    forget_term = per_instance.mean()
    return ObjectiveOutput(loss=forget_term,
                           parts={"forget": forget_term, "token_weight": _mean_over_tokens(weight, policy.mask)},
                           per_instance=per_instance)


@objective("tnpo", family="preference", paper=_WANG,
           formula="L = (2/β)·E_f[mean_t log(1 + (p_t/p_t^ref)^β)]")
def tnpo(model: torch.nn.Module, forget: Batch, ref_model: torch.nn.Module, beta: float = 0.1) -> ObjectiveOutput:
    """Token-wise NPO (TNPO, Wang et al. 2025).

    L = (2/β)·E_f[ mean_t log(1 + (p_t / p_t^ref)^β) ], NPO applied to each answer token's
    probability ratio instead of the whole sequence's. Its gradient is GA's per-token
    gradient scaled by w_t = 2σ(β·(log p_t - log p_t^ref)) = 2p_t^β/(p_t^β + (p_t^ref)^β),
    the token weight of the paper (``parts["token_weight"]``: mean w_t). β = 0.1.
    With θ = θ_ref the loss is (2/β)·log 2 and every w_t = 1.
    """
    return _token_npo(model, forget, ref_model, beta, alpha=None)


@objective("wtnpo", family="preference", paper=_WANG,
           formula="L = (2/β)·E_f[mean_t sg(p_t^α)·log(1 + (p_t/p_t^ref)^β)]")
def wtnpo(model: torch.nn.Module, forget: Batch, ref_model: torch.nn.Module, beta: float = 0.1,
          alpha: float = 1.0) -> ObjectiveOutput:
    """Weighted token-wise NPO (WTNPO, Wang et al. 2025).

    L = (2/β)·E_f[ mean_t sg(p_t^α)·log(1 + (p_t / p_t^ref)^β) ]: TNPO with each token also
    weighted by its detached probability to the power α, as WGA does for GA; the gradient
    weight is w_t = p_t^α · 2σ(β·(log p_t - log p_t^ref)) (``parts["token_weight"]``).
    β = 0.1 as in the authors' code; α = 1.0 is our default (the paper tunes α per setting;
    we could not confirm a single published value).
    """
    return _token_npo(model, forget, ref_model, beta, alpha=alpha)


@objective("dpo", family="preference", paper=_DPO, needs=("idk",),
           formula="L = -(2/β)·E_f[log σ(β·(log π_θ(y_idk|x)/π_ref(y_idk|x) - log π_θ(y|x)/π_ref(y|x)))]")
def dpo(model: torch.nn.Module, forget: Batch, ref_model: torch.nn.Module, beta: float = 0.1) -> ObjectiveOutput:
    """DPO with a refusal as the preferred and the forget answer as the rejected response.

    L = (2/β)·E_f[ softplus(-β·m) ], m = log(π_θ(y_idk|x)/π_ref(y_idk|x)) -
    log(π_θ(y|x)/π_ref(y|x)); y_idk from ``forget["idk"]``. The 2/β scale follows the TOFU
    and NPO code (with it, θ = θ_ref gives (2/β)·log 2, as NPO does). Gradient weight
    2σ(-β·m) (``parts["dpo_weight"]``, batch mean). β = 0.1 (Zhang et al. 2024).
    """
    preferred = _policy_and_reference(model, ref_model, forget["idk"])
    rejected = _policy_and_reference(model, ref_model, forget)
    margin = ((preferred[0].sequence() - preferred[1].sequence())
              - (rejected[0].sequence() - rejected[1].sequence()))
    per_instance = (2.0 / beta) * F.softplus(-beta * margin)
    weight = 2.0 * torch.sigmoid(-beta * margin).detach()
    forget_term = per_instance.mean()
    return ObjectiveOutput(loss=forget_term, parts={"forget": forget_term, "dpo_weight": weight.mean()},
                           per_instance=per_instance)
