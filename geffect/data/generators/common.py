"""Small seeded helpers the task generators share: one RNG per task, balanced draws, MC rows.

Every generator draws from its own ``random.Random`` seeded by the task name and the
world seed (string seeds are hashed with SHA-512 by ``random``, so they are stable
across processes and Python versions), in a fixed order: the same seed always gives
the same rows, and regenerating one task never shifts another's.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from geffect.data import lexicon as lx

Row = dict[str, Any]


def task_rng(task: str, seed: int) -> random.Random:
    """The generator of ``task`` for world seed ``seed``."""
    return random.Random(f"geffect/{task}/{seed}")


class Cycler:
    """Draws from ``pool`` in shuffled rounds, so every value is used about equally often.

    Balanced draws keep a model that never saw the data at chance on multiple-choice
    questions: no value is the right answer more often than the others.
    """

    def __init__(self, rng: random.Random, pool: Sequence[str]) -> None:
        if not pool:
            raise ValueError("Cycler needs a non-empty pool")
        self.rng, self.pool, self._queue = rng, list(pool), []

    def __call__(self) -> str:
        if not self._queue:
            self._queue = self.rng.sample(self.pool, len(self.pool))
        return self._queue.pop()


def others(rng: random.Random, pool: Sequence[str], truth: str, count: int) -> list[str]:
    """``count`` distinct values of ``pool`` other than ``truth`` (seeded sample)."""
    rest = sorted(set(pool) - {truth})
    if len(rest) < count:
        raise ValueError(f"pool of {len(pool)} values cannot give {count} distractors for {truth!r}")
    return rng.sample(rest, count)


def mc_row(rng: random.Random, question: str, truth: str, wrong: Sequence[str], **extra: Any) -> Row:
    """A multiple-choice row: ``question``, ``choices`` (truth at a seeded position), ``label``."""
    choices = list(wrong)
    label = rng.randrange(len(choices) + 1)
    choices.insert(label, truth)
    return {"question": question, "choices": choices, "label": label, **extra}


def invented_words(forge: lx.NameForge, count: int, min_syllables: int = 2,
                   max_syllables: int = 2) -> list[str]:
    """``count`` fresh lower-case invented words (unique within ``forge``)."""
    return [forge.name(min_syllables, max_syllables).lower() for _ in range(count)]


def compose(rng: random.Random, parts: Sequence[Sequence[str]]) -> list[str]:
    """One choice from each of ``parts`` (a tiny grammar: slot by slot)."""
    return [rng.choice(p) for p in parts]


def held_out(rng: random.Random, items: Sequence[Any], fraction: float) -> tuple[list[Any], list[Any]]:
    """Split ``items`` into (kept, held out) with ``round(fraction * n)`` seeded items held out."""
    if not 0 <= fraction < 1:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
    order = rng.sample(range(len(items)), len(items))
    cut = round(fraction * len(items))
    out = set(order[:cut])
    return [x for i, x in enumerate(items) if i not in out], [x for i, x in enumerate(items) if i in out]


def labelled(rng: random.Random, texts: Sequence[str], label: int, cut_rate: float = 0.3) -> list[Row]:
    """Rows ``{"text", "label"}`` for training and testing a scorer.

    A ``cut_rate`` share of the texts is cut to a random prefix of at least two words, so
    that a scorer also learns from fragments (what a damaged model generates).
    """
    rows = []
    for text in texts:
        words = text.split()
        if len(words) > 2 and rng.random() < cut_rate:
            text = " ".join(words[:rng.randint(2, len(words) - 1)])
        rows.append({"text": text, "label": label})
    return rows


def unique_draws(draw: Callable[[], str], count: int) -> list[str]:
    """``count`` distinct strings from repeated calls of ``draw``."""
    seen: dict[str, None] = {}
    for _ in range(200 * count):
        seen.setdefault(draw(), None)
        if len(seen) == count:
            return list(seen)
    raise RuntimeError(f"could not draw {count} distinct strings; enlarge the generator's pools")
