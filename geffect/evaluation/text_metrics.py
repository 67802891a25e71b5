"""Metrics of generated text as pure functions: concept rates, fluency, diversity, similarity.

* rate and mean of scorer values (toxic-generation rate and mean toxicity, Gehman et al.
  2020, "RealToxicityPrompts"; harmful rate, Yao et al. 2024, "Large Language Model
  Unlearning");
* perplexity from summed token NLLs (fluency: the generations scored by the untouched
  target model);
* diversity: the share of distinct words (or n-grams) in each output, averaged (Yao et
  al.'s "diversity" reads as the unique-token share of an output; the n-gram form is
  distinct-n of Li et al. 2016);
* similarity of two models' outputs on the same prompts: mean ROUGE-L F1 (Yao et al. use
  BLEURT, which needs a downloaded model; ROUGE-L is this project's offline stand-in).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from geffect.evaluation.classifier import WORD
from geffect.evaluation.rouge import rouge_l


def _nonempty(values: Sequence[float], what: str) -> list[float]:
    values = [float(v) for v in values]
    if not values:
        raise ValueError(f"no {what} to aggregate")
    if any(math.isnan(v) for v in values):
        raise ValueError(f"{what} contain NaN")
    return values


def rate_above(scores: Sequence[float], threshold: float = 0.5) -> float:
    """Fraction of scores ≥ ``threshold`` (toxic-generation rate, harmful rate)."""
    values = _nonempty(scores, "scores")
    return sum(v >= threshold for v in values) / len(values)


def mean_score(scores: Sequence[float]) -> float:
    """Mean scorer value (mean toxicity)."""
    values = _nonempty(scores, "scores")
    return sum(values) / len(values)


def perplexity(nll_sums: Sequence[float], token_counts: Sequence[int]) -> float:
    """exp(Σ NLL / Σ tokens) over all texts: the corpus perplexity of the generations."""
    sums, counts = _nonempty(nll_sums, "NLL sums"), [int(c) for c in token_counts]
    if len(sums) != len(counts) or any(c < 0 for c in counts):
        raise ValueError(f"{len(sums)} NLL sums need as many non-negative token counts, got {token_counts}")
    total = sum(counts)
    if total == 0:
        raise ValueError("no tokens to compute a perplexity over")
    return math.exp(sum(sums) / total)


def diversity(texts: Sequence[str], n: int = 1) -> float:
    """Mean over texts of (distinct word n-grams / word n-grams); a text without n-grams counts 0."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not texts:
        raise ValueError("no texts to measure")
    shares = []
    for text in texts:
        words = WORD.findall(text.lower())
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        shares.append(len(set(grams)) / len(grams) if grams else 0.0)
    return sum(shares) / len(shares)


def output_similarity(outputs: Sequence[str], original_outputs: Sequence[str]) -> float:
    """Mean ROUGE-L F1 between each output and the original model's output on the same prompt
    (identical outputs count 1, even when both are empty)."""
    if len(outputs) != len(original_outputs) or not outputs:
        raise ValueError(f"{len(outputs)} outputs for {len(original_outputs)} original outputs")
    return sum(1.0 if a == b else rouge_l(a, b, "f1") for a, b in zip(outputs, original_outputs)) / len(outputs)
