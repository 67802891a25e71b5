"""Cosine RMU and meta-learned cosine RMU: our reading of the dangerous-knowledge objective of
Atil, Gupta and Passonneau (2026).

The paper's abstract asks, for hazardous knowledge, for "a cosine-based, meta-learned variant of
RMU"; its formulas are not public to us. These objectives are this project's interpretation,
every choice kept a hyper-parameter so that a reader of the full paper can match it:

* the forget term replaces RMU's squared distance to ``c·u`` by ``1 − cos(h_ℓ, u)``, which is
  scale-free: no steering coefficient to tune to the model's activation norms;
* the retain term keeps block-ℓ activations on retain data at the frozen model's
  (``representation_retention``) by ``1 − cos`` (``retain_distance="cosine"``, the default, so that
  the whole loss is scale-free) or by RMU's squared distance (``"l2"``, the issue's first reading:
  on the rebuilt ``tiny`` that term, growing with the activation norms, outweighs the bounded
  forget term at α = 1 and 20 steps barely move it — see ``analyses/language_functions.py``);
* the meta-learned variant declares its two term weights, which a weight controller
  (``geffect.training.controllers``: ``"hypergradient"`` or ``"bandit"``) adjusts while training
  from G-effects measured on held-out validation probes.

Both train what RMU trains (``rmu_trainable``: the MLPs of blocks ℓ−2..ℓ).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from geffect.objectives.compose import combine
from geffect.objectives.registry import ObjectiveOutput, objective
from geffect.objectives.representation import (
    cosine_distance,
    representation_retention,
    resolve_layer,
    rmu_trainable,
    steering_vector,
    token_positions,
)
from geffect.objectives.terms import hidden_states_at, instance_mean

__all__ = ["ATIL", "cosine_forget_term", "cosine_rmu", "meta_cosine_rmu"]

Batch = Mapping[str, torch.Tensor]

ATIL = ("Atil, Gupta and Passonneau 2026, Model Unlearning Objectives Vary for Distinct Language Functions "
        "(arXiv 2605.26454); only the abstract is public: geffect's interpretation")

# Defaults shared by both objectives (chosen on the shipped tiny model; see analyses/language_functions.py).
RETAIN_WEIGHT = 1.0
RETAIN_DISTANCE = "cosine"


def cosine_forget_term(model: torch.nn.Module, forget: Batch, layer: int, tokens: str = "answer",
                       seed: int = 0) -> torch.Tensor:
    """Per forget instance: mean over its positions of 1 − cos(h_ℓ(x)_t, u) (shape B).

    ``u`` is RMU's fixed random unit direction (``steering_vector(H, seed)``).
    """
    hidden = hidden_states_at(model, forget, layer)
    u = steering_vector(hidden.shape[-1], seed, hidden.dtype, hidden.device)
    return instance_mean(cosine_distance(hidden, u), token_positions(forget, tokens, hidden.device))


def _terms(model: torch.nn.Module, forget: Batch, retain: Batch, ref_model: torch.nn.Module, layer: int | None,
           retain_distance: str, tokens: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-instance forget term, retain term) of cosine RMU."""
    layer = resolve_layer(model, layer)
    per_instance = cosine_forget_term(model, forget, layer, tokens, seed)
    retain_term = representation_retention(model, retain, ref_model, layer, tokens, distance=retain_distance)
    return per_instance, retain_term


@objective("cosine_rmu", family="representation", paper=ATIL, trainable=rmu_trainable,
           formula="L = E_f[mean_t (1 − cos(h_ℓ, u))] + α·E_r[mean_t (1 − cos(h_ℓ, h_ℓ^ref))]  (interpretation; "
                   "retain_distance='l2': RMU's ‖h_ℓ − h_ℓ^ref‖²/H)")
def cosine_rmu(model: torch.nn.Module, forget: Batch, retain: Batch, ref_model: torch.nn.Module,
               layer: int | None = None, alpha: float = RETAIN_WEIGHT, retain_distance: str = RETAIN_DISTANCE,
               tokens: str = "answer", seed: int = 0) -> ObjectiveOutput:
    """Cosine RMU (interpretation of Atil et al. 2026): RMU with a scale-free forget term.

    L = E_f[ mean_t (1 − cos(h_ℓ(x)_t, u)) ] + α·E_r[ mean_t d(h_ℓ(x)_t, h_ℓ^ref(x)_t) ]: forget
    activations at block ℓ turn towards a fixed random unit direction u whatever their norm
    (RMU's ‖h − c·u‖² needs c tuned to the model's activation norms); retain activations stay
    at the frozen model's, with d = 1 − cos (``retain_distance="cosine"``, default: both terms
    scale-free, so one setting serves every block) or RMU's squared distance (``"l2"``, mean over
    hidden units). Block ℓ defaults to RMU's relative depth
    (``default_layer``); the MLPs of blocks ℓ−2..ℓ train. The paper's formulas are not public:
    the cosine form, the retain term and α are this project's reading of its abstract.
    ``parts``: ``forget``, ``retain``.
    """
    per_instance, retain_term = _terms(model, forget, retain, ref_model, layer, retain_distance, tokens, seed)
    forget_term = per_instance.mean()
    base = ObjectiveOutput(loss=forget_term, parts={"forget": forget_term}, per_instance=per_instance)
    return combine(base, retain=(alpha, retain_term))


@objective("meta_cosine_rmu", family="representation", paper=ATIL, trainable=rmu_trainable,
           weights={"forget": "forget_weight", "retain": "retain_weight"}, companion="weight_controller",
           formula="L = w_f·E_f[mean_t (1 − cos(h_ℓ, u))] + w_r·E_r[mean_t (1 − cos(h_ℓ, h_ℓ^ref))], "
                   "w learned from validation G-effects  (interpretation)")
def meta_cosine_rmu(model: torch.nn.Module, forget: Batch, retain: Batch, ref_model: torch.nn.Module,
                    layer: int | None = None, forget_weight: float = 1.0, retain_weight: float = RETAIN_WEIGHT,
                    retain_distance: str = RETAIN_DISTANCE, tokens: str = "answer", seed: int = 0,
                    controller: str = "hypergradient", every: int = 5, gamma: float = 1.0,
                    val_size: int = 16, val_forget: str | None = None, val_retain: str | None = None,
                    meta_lr: float = 100.0,
                    grid: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0),
                    exploration: float = 1.0) -> ObjectiveOutput:
    """Meta-learned cosine RMU (interpretation of Atil et al. 2026): cosine RMU whose trade-off is learned.

    L = w_f·L_forget + w_r·L_retain with the two terms of ``cosine_rmu``. The loss itself uses
    only ``forget_weight`` and ``retain_weight`` (the starting w); while training, the weight
    controller named by ``controller`` re-sets them every ``every`` steps to lower the
    validation objective M = R(retain_val) − γ·R(forget_val), the mean NLL on ``val_size`` forget
    and retain rows the run never trains on: rows of the splits ``val_forget`` / ``val_retain``
    when given (e.g. a task's QA probes), else rows held out of the forget / retain training data:

    * ``"hypergradient"``: after a step θ' = θ − η Σ_j w_j ∇L_j, to first order
      ∂M(θ')/∂w_j = −η⟨∇M, ∇L_j⟩, a difference of the G-effects of term j on the two
      validation probes (one engine pass); then w_j ← w_j·exp(−β ∂M/∂w_j) with β =
      ``meta_lr``, renormalised to the starting Σ_j w_j. (With AdamW the step is not
      −η∇L; the same first-order signal is used.)
    * ``"bandit"``: a UCB1 bandit over ``grid`` of retain weights (w_f fixed), an arm chosen
      every ``every`` steps and rewarded by the measured decrease of M over its steps;
      ``exploration`` scales the confidence bonus (rewards divided by the largest |reward| so far).

    The weights used at each step are logged to ``history.parquet`` (``weight_forget``,
    ``weight_retain``). The meta-learning rule, M, γ and the bandit are this project's reading
    of the abstract's "meta-learned"; called directly (outside the trainer) the weights stay at
    their starting values. ``parts``: ``forget``, ``retain`` (unweighted).
    """
    per_instance, retain_term = _terms(model, forget, retain, ref_model, layer, retain_distance, tokens, seed)
    forget_term = per_instance.mean()
    base = ObjectiveOutput(loss=forget_weight * forget_term, parts={"forget": forget_term},
                           per_instance=per_instance)
    return combine(base, retain=(retain_weight, retain_term))
