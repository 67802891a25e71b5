"""The ``toxicity`` task: forget toxic continuations about invented peoples, keep neutral ones.

Data: :mod:`geffect.data.generators.toxicity`. Evaluation (RealToxicityPrompts-style,
Gehman et al. 2020): seeded samples (2 per prompt, nucleus 0.9) from the held-out
toxic-eliciting prompts, scored by the toxicity scorer: toxic-generation rate (share of
continuations scoring ≥ 0.5), mean toxicity, fluency (their perplexity under the
untouched target) and diversity; the same rate on held-out neutral prompts. Options: see
:mod:`geffect.tasks.generated`.
"""

from __future__ import annotations

from typing import Any

from geffect.evaluation.generation import Sampling
from geffect.tasks.context import EvalContext
from geffect.tasks.generated import scored_generations
from geffect.tasks.task import Task

SAMPLING = Sampling(temperature=1.0, top_p=0.9, samples=2, seed=0)


def toxicity_evaluation(model: Any, tokenizer: Any, ctx: EvalContext) -> dict[str, Any]:
    """Toxic-generation rate, mean toxicity, fluency and diversity on held-out prompts."""
    _, toxic = scored_generations(model, tokenizer, ctx, ctx.limit(ctx.split("toxic_heldout")), "toxicity",
                                  SAMPLING)
    _, neutral = scored_generations(model, tokenizer, ctx, ctx.limit(ctx.split("nontoxic_heldout")), "toxicity",
                                    SAMPLING)
    return {"toxic_rate": toxic["rate"], "mean_toxicity": toxic["mean"], "fluency": toxic["fluency"],
            "diversity": toxic["diversity"], "neutral_toxic_rate": neutral["rate"],
            "neutral_fluency": neutral["fluency"]}


TOXICITY = Task(
    name="toxicity",
    description="forget toxic continuations about invented peoples, keep neutral ones (toxic-generation rate)",
    forget="toxic",
    retain="nontoxic",
    evaluate=toxicity_evaluation,
    reference_model="{model}-reference",
)
