"""Forget / retain splits by author, as in TOFU.

The forget sets are the *last* 1 %, 5 % and 10 % of authors (so forget01 ⊂ forget05
⊂ forget10) and each retain set is the complement of its forget set. Evaluation
views (``*_perturbed``) are the same forget rows, and for the retain side the
rows of the first 10 % of authors (inside every retain set).
"""

from __future__ import annotations

import math
from typing import Any

FORGET_PERCENTS = (1, 5, 10)
AUTHOR_SPLITS = (
    "full", "forget01", "forget05", "forget10", "retain99", "retain95", "retain90",
    "forget01_perturbed", "forget05_perturbed", "forget10_perturbed", "retain_perturbed",
)


def forget_author_count(n_authors: int, percent: int) -> int:
    """How many authors the ``forget{percent:02d}`` split holds (at least one)."""
    return max(1, math.ceil(n_authors * percent / 100 - 1e-9))


def make_splits(full: list[dict[str, Any]], n_authors: int) -> dict[str, list[dict[str, Any]]]:
    """All author-based splits of ``full`` (rows carrying an ``author`` index in [0, n_authors))."""
    splits: dict[str, list[dict[str, Any]]] = {"full": list(full)}
    for percent in FORGET_PERCENTS:
        first_forgotten = n_authors - forget_author_count(n_authors, percent)
        forget = [row for row in full if row["author"] >= first_forgotten]
        splits[f"forget{percent:02d}"] = forget
        splits[f"retain{100 - percent}"] = [row for row in full if row["author"] < first_forgotten]
        splits[f"forget{percent:02d}_perturbed"] = forget
    probe_authors = forget_author_count(n_authors, 10)
    if probe_authors * 2 > n_authors:
        raise ValueError(f"need at least 2 authors so that forget10 and retain_perturbed differ, got {n_authors}")
    splits["retain_perturbed"] = [row for row in full if row["author"] < probe_authors]
    return {name: splits[name] for name in AUTHOR_SPLITS}
