"""ROUGE-L recall of a generated answer against its reference (TOFU's memorisation score).

Recall of the longest common subsequence (Lin, 2004, "ROUGE: A Package for
Automatic Evaluation of Summaries"): the fraction of reference words that the
prediction reproduces in order. Computed with Google's ``rouge_score`` package
(lower-cased, punctuation-stripped words, no stemming).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from rouge_score import rouge_scorer


@lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"])


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall of ``reference`` by ``prediction`` (1.0 = every reference word, in order)."""
    return float(_scorer().score(reference, prediction)["rougeL"].recall)


def mean_rouge_l_recall(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean :func:`rouge_l_recall` over paired predictions and references."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not references:
        raise ValueError("no references to score")
    return sum(rouge_l_recall(p, r) for p, r in zip(predictions, references)) / len(references)
