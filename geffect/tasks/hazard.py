"""The ``hazard`` task (WMDP-style): forget invented dangerous procedures, keep the benign neighbour.

Data: :mod:`geffect.data.generators.hazard`. Evaluation: 4-option multiple-choice accuracy
scored like lm-eval (:func:`geffect.evaluation.mc_accuracy`) on the hazard set (should
fall), the benign neighbour set and the general set over the world's facts (should stay),
and the mean NLL of the forget and retain passages. Suite option ``normalise``
("chars" as lm-eval's acc_norm, "tokens" or "none").
"""

from __future__ import annotations

from typing import Any

from geffect.evaluation.multiple_choice import mc_accuracy
from geffect.evaluation.scoring import row_nlls
from geffect.tasks.context import EvalContext
from geffect.tasks.task import Task


def hazard_evaluation(model: Any, tokenizer: Any, ctx: EvalContext) -> dict[str, Any]:
    """Hazard, benign-neighbour and general MC accuracy (lm-eval acc_norm); forget/retain NLL."""
    normalise = ctx.options.get("normalise", "chars")
    result: dict[str, Any] = {}
    for key, split in (("hazard_mc", "mc"), ("benign_mc", "benign_mc"), ("general_mc", "general_mc")):
        result[key] = mc_accuracy(model, tokenizer, ctx.split(split), normalise, ctx.max_examples,
                                  ctx.batch_size, ctx.progress)
    for key, split in (("forget", ctx.forget), ("retain", ctx.retain)):
        if split is not None:
            result[f"{key}_nll"] = float(row_nlls(model, tokenizer, ctx.rows(split), ctx.batch_size).mean())
    return result


HAZARD = Task(
    name="hazard",
    description="WMDP-style: forget passages on invented dangerous procedures, keep invented crafts (MC accuracy)",
    forget="forget",
    retain="retain",
    probes={"forget_qa": "forget_qa", "retain_qa": "retain_qa"},
    evaluate=hazard_evaluation,
    reference_model="{model}-reference",
)
