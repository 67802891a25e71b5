"""TOFU evaluation: answer probability, ROUGE-L recall, truth ratio, forget quality, model utility.

:func:`evaluate` scores a model on the embedded world (or real TOFU) and returns a flat
dict of metrics; :mod:`geffect.evaluation.metrics` holds the formulas as pure functions
(Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs").
"""

from __future__ import annotations

from geffect.evaluation.metrics import (
    forget_quality,
    model_utility,
    multiple_choice_probability,
    normalized_probability,
    truth_ratio,
    truth_ratio_score,
)
from geffect.evaluation.scoring import answer_nlls, perturbed_nlls
from geffect.evaluation.tofu import SplitScores, evaluate, forget_truth_ratios, score_split

__all__ = [
    "SplitScores",
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
