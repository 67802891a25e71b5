"""ROUGE-L of generated text against a reference: TOFU's recall, MUSE's F1.

The longest common subsequence of words (Lin, 2004, "ROUGE: A Package for Automatic
Evaluation of Summaries"), computed with Google's ``rouge_score`` package (lower-cased,
punctuation-stripped words, no stemming). TOFU (Maini et al. 2024) scores answers by
the *recall* of the reference; MUSE (Shi et al. 2024) scores verbatim continuations
(VerbMem) and answers (KnowMem) by the *F1* of the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from rouge_score import rouge_scorer

KINDS = {"recall": "recall", "precision": "precision", "f1": "fmeasure"}


@lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"])


def rouge_l(prediction: str, reference: str, kind: str = "f1") -> float:
    """ROUGE-L ``kind`` ("recall", "precision" or "f1") of ``prediction`` against ``reference``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    return float(getattr(_scorer().score(reference, prediction)["rougeL"], KINDS[kind]))


def mean_rouge_l(predictions: Sequence[str], references: Sequence[str], kind: str = "f1") -> float:
    """Mean :func:`rouge_l` over paired predictions and references."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not references:
        raise ValueError("no references to score")
    return sum(rouge_l(p, r, kind) for p, r in zip(predictions, references)) / len(references)


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall of ``reference`` by ``prediction`` (1.0 = every reference word, in order)."""
    return rouge_l(prediction, reference, "recall")


def mean_rouge_l_recall(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean :func:`rouge_l_recall` over paired predictions and references (TOFU's ROUGE)."""
    return mean_rouge_l(predictions, references, "recall")
