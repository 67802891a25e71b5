"""The evaluation every task without its own suite gets (a user's files included): NLL and greedy ROUGE-L.

For each group of rows — the forget rows used in training (``forget``), the forget rows held
out of training (``forget_heldout``), and the same for retain — it reports the mean token NLL
of the targets under the model (``<group>_nll``) and the ROUGE-L recall of the model's greedy
continuation against the reference (``<group>_rouge``; Lin 2004, as TOFU scores memorisation),
with the row count (``n_<group>``). Continuations start from the question (qa), the prompt
(prompt/response) or the first half of the text's tokens (text), and run for the reference's
length plus a margin. A held-out group is present only when the run held rows out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from geffect.tasks.context import EvalContext
from geffect.tasks.source import Row

GENERATION_MARGIN = 8  # greedy tokens allowed beyond the longest reference


def nll_and_rouge(model: Any, tokenizer: Any, rows: Sequence[Row], *, batch_size: int = 32,
                  progress: bool = False, name: str = "rows") -> dict[str, float]:
    """Mean target NLL and mean greedy ROUGE-L recall of ``rows`` (any row kind) under ``model``."""
    from geffect.data.rows import generation_prompt
    from geffect.evaluation.generation import continue_prompts
    from geffect.evaluation.rouge import mean_rouge_l_recall
    from geffect.evaluation.scoring import row_nlls

    nll = row_nlls(model, tokenizer, rows, batch_size, progress, desc=f"{name} NLL")
    prompts, references = zip(*(generation_prompt(tokenizer, row) for row in rows))
    budget = max(len(tokenizer(" " + r, add_special_tokens=False)["input_ids"]) for r in references)
    generated = continue_prompts(model, tokenizer, prompts, budget + 1 + GENERATION_MARGIN, None, batch_size,
                                 progress, desc=f"{name} generation")
    scored = [(g, r) for g, r in zip(generated, references) if r.strip()]  # a one-token text leaves no reference
    rouge = mean_rouge_l_recall(*zip(*scored)) if scored else math.nan
    return {"nll": float(nll.mean()), "rouge": float(rouge)}


def default_evaluation(model: Any, tokenizer: Any, ctx: EvalContext) -> dict[str, Any]:
    """Mean NLL and greedy ROUGE-L recall on the forget and retain rows, trained and held out."""
    groups: list[tuple[str, list[Row]]] = [("forget", ctx.rows(ctx.forget)), ("forget_heldout", ctx.heldout(ctx.forget))]
    if ctx.retain is not None:
        groups += [("retain", ctx.rows(ctx.retain)), ("retain_heldout", ctx.heldout(ctx.retain))]
    result: dict[str, Any] = {"forget_split": ctx.forget, "retain_split": ctx.retain, "holdout": ctx.data.holdout}
    for name, rows in groups:
        if not rows:
            continue
        scores = nll_and_rouge(model, tokenizer, rows, batch_size=ctx.batch_size, progress=ctx.progress, name=name)
        result.update({f"{name}_nll": scores["nll"], f"{name}_rouge": scores["rouge"], f"n_{name}": len(rows)})
    return result
