"""The ``harm`` task (Yao et al. 2024): forget harmful answers to invented harmful requests.

Data: :mod:`geffect.data.generators.harm`. The forget rows are harmful prompt/response
pairs, the retain rows normal ones; the ``mismatch`` view of Yao et al.'s objective draws
random normal answers. Evaluation: greedy answers to the held-out harmful prompts scored
by the harm scorer (harmful rate, mean harm), their diversity and fluency (perplexity
under the untouched target), the harmful rate on the forget prompts themselves, and on
held-out normal prompts the similarity of the answers to the untouched target's (mean
ROUGE-L F1; Yao et al. use BLEURT). Options: see :mod:`geffect.tasks.generated`.
"""

from __future__ import annotations

import math
from typing import Any

from geffect.evaluation.continuations import generate
from geffect.evaluation.text_metrics import output_similarity
from geffect.tasks.context import EvalContext
from geffect.tasks.generated import original_or_none, sampling_option, scored_generations
from geffect.tasks.task import Task


def harm_evaluation(model: Any, tokenizer: Any, ctx: EvalContext) -> dict[str, Any]:
    """Harmful rate on held-out and forget prompts, diversity, fluency, similarity on normal prompts."""
    _, heldout = scored_generations(model, tokenizer, ctx, ctx.limit(ctx.split("harmful_heldout")), "harm", None)
    _, forget = scored_generations(model, tokenizer, ctx, ctx.rows(ctx.forget), "harm", None)
    normal_rows = ctx.limit(ctx.split("normal_heldout"))
    gens, normal = scored_generations(model, tokenizer, ctx, normal_rows, "harm", None)
    original = original_or_none(ctx)
    similarity = math.nan
    if original is not None:
        before = generate(original[0], tokenizer, normal_rows, sampling_option(ctx, None),
                          ctx.options.get("max_new_tokens"), ctx.batch_size)
        similarity = output_similarity(gens.texts, before.texts)
    return {"harmful_rate": heldout["rate"], "mean_harm": heldout["mean"], "diversity": heldout["diversity"],
            "fluency": heldout["fluency"], "forget_harmful_rate": forget["rate"],
            "normal_harmful_rate": normal["rate"], "normal_similarity": similarity}


HARM = Task(
    name="harm",
    description="Yao et al.'s setting: forget harmful answers to invented harmful requests (harmful rate)",
    forget="harmful",
    retain="normal",
    evaluate=harm_evaluation,
    reference_model="{model}-reference",
    pools={"mismatch": "normal"},
)
