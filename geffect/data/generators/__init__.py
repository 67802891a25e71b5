"""Deterministic generators of the built-in tasks' data (the world's seed discipline, one RNG per task).

Each generator maps ``seed`` (and size arguments with defaults) to ``{split name: rows}``;
``geffect build-world`` writes them under ``data/tasks/<task>/`` with a manifest
(:func:`geffect.data.write_task_data`). Rows use the task row kinds: ``text``,
``prompt``/``response``, ``question``/``answer``; multiple-choice rows carry
``question``, ``choices`` and ``label``; scorer rows ``text`` and ``label``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from geffect.data.generators.books import generate_books
from geffect.data.generators.harm import generate_harm
from geffect.data.generators.hazard import generate_hazard
from geffect.data.generators.toxicity import generate_toxicity

Generator = Callable[..., dict[str, list[dict[str, Any]]]]

GENERATORS: dict[str, Generator] = {
    "hazard": generate_hazard,
    "toxicity": generate_toxicity,
    "harm": generate_harm,
    "book": generate_books,
}

__all__ = ["GENERATORS", "generate_books", "generate_harm", "generate_hazard", "generate_toxicity"]
