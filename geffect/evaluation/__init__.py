"""Evaluation: TOFU's metrics, the other tasks' metrics, scorers and generation.

:func:`evaluate` scores a model on the embedded world (or real TOFU) and returns a flat
dict of metrics; :mod:`geffect.evaluation.metrics` holds the formulas as pure functions
(Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs"). The other tasks
use :func:`mc_accuracy` (lm-eval-style multiple choice), :mod:`~geffect.evaluation.text_metrics`
(concept rates, fluency, diversity, similarity), ROUGE-L (:mod:`~geffect.evaluation.rouge`),
seeded generation (:func:`continue_prompts`) and text scorers (:func:`get_scorer`).
"""

from __future__ import annotations

from geffect.evaluation.generation import Sampling, continue_prompts, greedy_answers
from geffect.evaluation.metrics import (
    forget_quality,
    model_utility,
    multiple_choice_probability,
    normalized_probability,
    truth_ratio,
    truth_ratio_score,
)
from geffect.evaluation.multiple_choice import mc_accuracy
from geffect.evaluation.scorers import (
    Scorer,
    TransformersScorer,
    get_scorer,
    list_scorers,
    register_scorer,
)
from geffect.evaluation.scoring import answer_nlls, perturbed_nlls
from geffect.evaluation.tofu import SplitScores, evaluate, forget_truth_ratios, score_split

__all__ = [
    "Sampling",
    "Scorer",
    "SplitScores",
    "TransformersScorer",
    "continue_prompts",
    "get_scorer",
    "greedy_answers",
    "list_scorers",
    "mc_accuracy",
    "register_scorer",
    "answer_nlls",
    "evaluate",
    "forget_quality",
    "forget_truth_ratios",
    "model_utility",
    "multiple_choice_probability",
    "normalized_probability",
    "perturbed_nlls",
    "score_split",
    "truth_ratio",
    "truth_ratio_score",
]
