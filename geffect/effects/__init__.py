"""The G-effect engine: exact per-instance, per-layer (and per-token, pairwise) gradient effects.

Definitions (Wang et al., ICLR 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective
and Go Beyond"):

- A probe batch has ``input_ids``, ``attention_mask``, ``labels`` (-100 = ignored). The **risk**
  of instance ``i``, ``R_i(θ)``, is the mean token negative log-likelihood over its label tokens
  (after the causal shift). An instance without label tokens is an error naming its index. The
  paper's code averages over all label tokens of the batch instead: ``reduction="token"`` (each
  instance then carries its share ``(B/N) Σ_τ ℓ_{i,τ}``, so batch values are still means).
- For a **direction** ``v`` (one tensor per trainable parameter) the effect of instance ``i`` in
  layer group ``k`` is ``e[i,k] = <∇_{θ_k} R_i(θ), v_k>``; ``Σ_k e[i,k] = ∇R_i · v`` exactly and the
  batch G-effect is the mean over instances. With ``v = ∇θ L_u`` (an unlearning objective's
  gradient) this is the paper's **G-effect**: one SGD step of size η changes ``R_i`` by ≈ ``-η e_i``,
  so a negative value on the forget set means unlearning and on retain data collateral damage.
  With ``v = Δθ`` (the update the optimizer applied) ``∇R_i · Δθ`` is that step's first-order
  risk change, the **update effect**.
- **Layer groups**: ``embed``, ``block.0`` … ``block.{L-1}``, ``final_norm``, ``lm_head``, found from
  the module tree (``geffect.effects.groups``); ``granularity="module"`` names single modules.
  Tied weights count where each use happens; the sum stays exact.

Entry points: ``EffectProbe`` (reusable, hooks registered once; ``measure_many`` takes several
directions, e.g. gradient and update, from one pass), ``gradient_effect`` (one-shot
DataFrame), ``token_effect`` (per label token), ``pairwise_effect`` (forget × probe matrices),
``layer_groups``; ``oracle_effects`` is the brute-force reference used by tests and benchmarks.
"""

from __future__ import annotations

from geffect.effects.api import gradient_effect
from geffect.effects.groups import layer_groups
from geffect.effects.oracle import oracle_effects, oracle_pairwise, oracle_token_effects
from geffect.effects.pairwise import PairwiseResult, pairwise_effect
from geffect.effects.probe import EffectProbe, EffectResult
from geffect.effects.tokens import token_effect

__all__ = [
    "EffectProbe",
    "EffectResult",
    "PairwiseResult",
    "gradient_effect",
    "layer_groups",
    "oracle_effects",
    "oracle_pairwise",
    "oracle_token_effects",
    "pairwise_effect",
    "token_effect",
]
