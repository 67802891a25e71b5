"""A small text classifier: logistic regression on word uni- and bigrams, stored as JSON.

The shipped toxicity and harm scorers are trained with it on the tasks' synthetic
labelled text: lower-cased word n-grams (presence, not counts) as sparse features, an
L2-penalised logistic loss minimised with ``scipy.optimize.minimize`` (L-BFGS), and the
vocabulary, weights and bias written as plain JSON — nothing executable is ever loaded.
Only what the features can see is learned: on the invented words of the synthetic tasks
that is enough; for real text plug in a real scorer (see :mod:`geffect.evaluation.scorers`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, sparse
from scipy.special import expit

WORD = re.compile(r"[a-z0-9']+")
FORMAT = "geffect-bow-logistic/1"


def ngrams(text: str, n: int) -> set[str]:
    """The distinct lower-cased word 1..n-grams of ``text`` (joined by spaces)."""
    words = WORD.findall(text.lower())
    return {" ".join(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1)}


def vocabulary_of(feature_sets: Iterable[Iterable[str]], min_count: int = 1) -> dict[str, int]:
    """Features present in at least ``min_count`` of the sets, numbered in sorted order."""
    counts: dict[str, int] = {}
    for features in feature_sets:
        for f in set(features):
            counts[f] = counts.get(f, 0) + 1
    return {f: i for i, f in enumerate(sorted(f for f, c in counts.items() if c >= min_count))}


def presence_matrix(feature_sets: Sequence[Iterable[str]], vocabulary: dict[str, int]) -> sparse.csr_matrix:
    """Binary presence matrix (sets × vocabulary); features outside the vocabulary are dropped."""
    rows, cols = [], []
    for i, features in enumerate(feature_sets):
        hits = sorted({vocabulary[f] for f in features if f in vocabulary})
        rows.extend([i] * len(hits))
        cols.extend(hits)
    return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(feature_sets), len(vocabulary)))


@dataclass
class BagOfWordsClassifier:
    """P(label = 1 | text) = sigmoid(bias + Σ weights of the text's n-grams)."""

    vocabulary: dict[str, int]
    weights: np.ndarray
    bias: float
    ngram: int = 2
    info: dict[str, Any] = field(default_factory=dict)

    def features(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """Binary n-gram presence matrix (texts × vocabulary); unseen n-grams are dropped."""
        return presence_matrix([ngrams(text, self.ngram) for text in texts], self.vocabulary)

    def score(self, texts: Sequence[str]) -> list[float]:
        """Probability that each text has the label (the scorer interface)."""
        if isinstance(texts, str):
            raise TypeError("score takes a sequence of texts, not one string")
        if not texts:
            return []
        return expit(self.features(texts) @ self.weights + self.bias).tolist()

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[int], ngram: int = 2, l2: float = 1.0,
            min_count: int = 2) -> BagOfWordsClassifier:
        """Fit on ``texts`` with 0/1 ``labels``: n-grams seen in ≥ ``min_count`` texts, L2 weight ``l2``."""
        y = np.asarray(labels, dtype=np.float64)
        if len(texts) != len(y) or len(y) == 0 or not set(np.unique(y)) <= {0.0, 1.0} or len(np.unique(y)) < 2:
            raise ValueError("fit needs as many 0/1 labels as texts, with both labels present")
        vocabulary = vocabulary_of((ngrams(text, ngram) for text in texts), min_count)
        model = cls(vocabulary, np.zeros(len(vocabulary)), 0.0, ngram)
        model.weights, model.bias, converged = fit_logistic(model.features(texts), y, l2)
        model.info = {"train_size": len(y), "l2": l2, "min_count": min_count, "converged": converged}
        return model

    def to_json(self) -> dict[str, Any]:
        weights = {g: round(float(self.weights[i]), 6) for g, i in self.vocabulary.items()}
        return {"format": FORMAT, "ngram": self.ngram, "bias": round(self.bias, 6), "weights": weights,
                "info": self.info}

    def save(self, path: str | Path) -> None:
        """Write the classifier as JSON (sorted keys: byte-identical for the same fit)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> BagOfWordsClassifier:
        """Read a classifier written by :meth:`save`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a geffect bag-of-words classifier (format {data.get('format')!r})")
        grams = sorted(data["weights"])
        vocabulary = {g: i for i, g in enumerate(grams)}
        weights = np.array([data["weights"][g] for g in grams], dtype=np.float64)
        return cls(vocabulary, weights, float(data["bias"]), int(data["ngram"]), data.get("info", {}))


def fit_logistic(x: sparse.spmatrix | np.ndarray, y: Sequence[float] | np.ndarray,
                 l2: float = 1.0) -> tuple[np.ndarray, float, bool]:
    """(weights, bias, converged) of an L2-penalised logistic regression on feature rows ``x`` (L-BFGS).

    Minimises ``Σ log(1 + e^z) − y·z + l2/2·‖w‖²`` with ``z = x·w + b`` (the bias is not penalised).
    """
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] != len(y) or len(y) == 0 or not set(np.unique(y)) <= {0.0, 1.0} or len(np.unique(y)) < 2:
        raise ValueError("fit needs one 0/1 label per row, with both labels present")

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ theta[:-1] + theta[-1]
        # log(1 + e^z) - y z, computed stably
        value = float(np.sum(np.logaddexp(0.0, z) - y * z)) + 0.5 * l2 * float(theta[:-1] @ theta[:-1])
        residual = expit(z) - y
        return value, np.concatenate([x.T @ residual + l2 * theta[:-1], [residual.sum()]])

    result = optimize.minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B")
    return result.x[:-1], float(result.x[-1]), bool(result.success)


def accuracy(scores: Sequence[float], labels: Sequence[int], threshold: float = 0.5) -> float:
    """Fraction of texts whose thresholded score equals their 0/1 label."""
    if len(scores) != len(labels) or not labels:
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    return sum((s >= threshold) == bool(y) for s, y in zip(scores, labels)) / len(labels)


__all__ = ["BagOfWordsClassifier", "accuracy", "fit_logistic", "ngrams", "presence_matrix", "vocabulary_of"]
