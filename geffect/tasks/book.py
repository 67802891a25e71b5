"""The ``book`` task (MUSE-style): forget one memorised invented book, keep the others.

Data: :mod:`geffect.data.generators.books`. Evaluation (Shi et al. 2024): VerbMem — the
greedy continuation of each passage from its first sentence, as many tokens as the rest
of the passage, against that rest, ROUGE-L F1 — and KnowMem — greedy answers to questions
about the book, ROUGE-L F1 — on the forget book and on the retained ones.
"""

from __future__ import annotations

from typing import Any

from geffect.evaluation.continuations import generate, reference_rouge
from geffect.tasks.context import EvalContext
from geffect.tasks.task import Task


def book_evaluation(model: Any, tokenizer: Any, ctx: EvalContext) -> dict[str, Any]:
    """VerbMem and KnowMem (ROUGE-L F1 of greedy continuations) on the forget and retained books."""
    result = {}
    for metric, suffix in (("verbmem", "_verbatim"), ("knowmem", "_qa")):
        for side in ("forget", "retain"):
            rows = ctx.limit(ctx.split(side + suffix))
            gens = generate(model, tokenizer, rows, None, ctx.options.get("max_new_tokens"), ctx.batch_size,
                            ctx.progress, reference_length=metric == "verbmem")
            result[f"{metric}_{side}"] = reference_rouge(gens, "f1")
    return result


BOOK = Task(
    name="book",
    description="MUSE-style: forget one memorised invented book, keep three (VerbMem, KnowMem)",
    forget="forget",
    retain="retain",
    probes={"forget_qa": "forget_qa", "retain_qa": "retain_qa"},
    evaluate=book_evaluation,
    reference_model="{model}-reference",
)
