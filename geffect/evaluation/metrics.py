"""TOFU's metric formulas as pure functions of per-answer mean token NLLs.

Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs" (COLM 2024). All
quantities start from n(a|q), the mean token NLL of answer a to question q (answer
tokens + EOS), so that exp(-n) = P(a|q)^(1/|a|) is the length-normalised probability.

* probability (forget / retain): exp(-n(a|q)), averaged over questions;
* probability (world facts, real authors): TOFU treats these as multiple choice,
  exp(-n(a)) / (exp(-n(a)) + Σ_j exp(-n(ã_j))) over the perturbed (wrong) answers ã_j;
* truth ratio R = mean_j P(ã_j|q)^(1/|ã_j|) / P(â|q)^(1/|â|), â the paraphrased answer
  (the plain answer on world facts / real authors), ã_j the perturbed answers. The
  paper writes an arithmetic mean over j; TOFU's released code (which produced the
  paper's numbers) averages the NLLs, i.e. takes the geometric mean of the
  probabilities. ``mean="geometric"`` (default) follows the code;
* truth-ratio score: mean max(0, 1 - R) on retain / world facts / real authors (model
  utility), and mean min(R, 1/R) on the forget split (reported as the forget truth ratio),
  as in TOFU's code;
* forget quality: p-value of the two-sample Kolmogorov-Smirnov test between the truth
  ratios of the unlearned model and of the retain model on the forget split;
* model utility: harmonic mean of the probability, ROUGE-L and truth-ratio scores on
  the retain, world-facts (and real-authors, when present) splits.

Ratios of probabilities are computed from NLLs in log space, so a model whose likelihoods
underflow (e.g. after a diverged run) still gets well-defined scores; a NaN NLL (the model's
logits overflowed) gives NaN for exactly the quantities that depend on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy.special import logsumexp
from scipy.stats import hmean, ks_2samp

__all__ = [
    "forget_quality",
    "model_utility",
    "multiple_choice_probability",
    "name_undefined",
    "normalized_probability",
    "truth_ratio",
    "truth_ratio_score",
]

Ragged = Sequence[Sequence[float]] | np.ndarray


def _vector(values: Iterable[float], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D sequence, got shape {array.shape}")
    return array


def _rows(perturbed: Ragged, n: int) -> list[np.ndarray]:
    rows = [np.asarray(row, dtype=np.float64) for row in perturbed]
    if len(rows) != n:
        raise ValueError(f"{len(rows)} rows of perturbed-answer NLLs for {n} questions")
    empty = [i for i, row in enumerate(rows) if row.size == 0]
    if empty:
        raise ValueError(f"questions {empty[:5]} have no perturbed answers")
    return rows


def normalized_probability(mean_nll: Iterable[float]) -> np.ndarray:
    """P(a|q)^(1/|a|) = exp(-mean token NLL), per answer."""
    return np.exp(-_vector(mean_nll, "mean_nll"))


def multiple_choice_probability(correct_nll: Iterable[float], perturbed_nll: Ragged) -> np.ndarray:
    """exp(-n(a)) / (exp(-n(a)) + Σ_j exp(-n(ã_j))) per question (TOFU's world-facts probability)."""
    correct = _vector(correct_nll, "correct_nll")
    rows = _rows(perturbed_nll, correct.size)
    return np.array([np.exp(-a - logsumexp(-np.concatenate([[a], row]))) for a, row in zip(correct, rows)])


def truth_ratio(base_nll: Iterable[float], perturbed_nll: Ragged, mean: str = "geometric") -> np.ndarray:
    """R = mean_j P(ã_j)^(1/|ã_j|) / P(â)^(1/|â|) per question (see the module docstring).

    ``mean="geometric"``: exp(n(â) - mean_j n(ã_j)) as in TOFU's code; ``"arithmetic"``:
    mean_j exp(-n(ã_j)) / exp(-n(â)) as the paper's formula reads.
    """
    base = _vector(base_nll, "base_nll")
    rows = _rows(perturbed_nll, base.size)
    if mean == "geometric":
        return np.array([np.exp(b - row.mean()) for b, row in zip(base, rows)])
    if mean == "arithmetic":  # log R = log mean_j exp(-n(ã_j)) + n(â)
        return np.array([np.exp(logsumexp(-row) - np.log(row.size) + b) for b, row in zip(base, rows)])
    raise ValueError(f"mean must be 'geometric' or 'arithmetic', got {mean!r}")


def truth_ratio_score(ratios: Iterable[float], split: str) -> float:
    """Mean min(R, 1/R) for ``split="forget"``, mean max(0, 1 - R) for ``split="utility"`` (NaN if any R is)."""
    r = _vector(ratios, "ratios")
    if np.any(r < 0):
        raise ValueError("truth ratios must be non-negative numbers")
    if split == "forget":
        with np.errstate(divide="ignore", invalid="ignore"):  # R = 0 or inf scores 0, as the limit
            return float(np.minimum(r, 1.0 / r).mean())
    if split == "utility":
        return float(np.maximum(0.0, 1.0 - r).mean())
    raise ValueError(f"split must be 'forget' or 'utility', got {split!r}")


def forget_quality(unlearned_ratios: Iterable[float], retain_ratios: Iterable[float]) -> tuple[float, float]:
    """(p-value, statistic) of ``scipy.stats.ks_2samp`` between two truth-ratio samples.

    A high p-value means the unlearned model's truth ratios on the forget split are
    indistinguishable from those of a model never trained on it.
    """
    result = ks_2samp(_vector(unlearned_ratios, "unlearned_ratios"), _vector(retain_ratios, "retain_ratios"))
    return float(result.pvalue), float(result.statistic)


def name_undefined(result: dict) -> dict:
    """``result`` with ``"undefined"``: the keys whose value is a non-finite float (e.g. a diverged
    model whose logits overflow), so that they are named beside the metrics that still stand."""
    undefined = [k for k, v in result.items() if isinstance(v, float) and not np.isfinite(v)]
    return {**result, "undefined": undefined} if undefined else result


def model_utility(scores: Iterable[float]) -> float:
    """Harmonic mean of non-negative scores (0 if any score is 0, as TOFU's hmean gives; NaN if any is NaN)."""
    values = _vector(scores, "scores")
    if np.any(np.isnan(values)):
        return float("nan")
    if np.any(values < 0) or not np.all(np.isfinite(values)):
        raise ValueError(f"model utility needs finite non-negative scores, got {values.tolist()}")
    if np.any(values == 0):
        return 0.0
    return float(hmean(values))
