"""What each shipped model learns: the TOFU world's authors and facts, and every task's data.

The target ``tiny`` learns everything, like the 7–8B models of the papers hold hazardous
knowledge, toxicity and memorised text at once. Each reference model differs from it by
what it never saw: ``tiny-retainNN`` lacks the TOFU forget authors (TOFU's retain model,
for forget quality), ``tiny-reference`` lacks every task's forget portion (the hazard
procedures, the toxic continuations, the harmful answers, the forgotten book) and the
forget10 authors — what perfect unlearning of any task would leave.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]

# task -> its splits a model learns, each marked True when it is the task's forget portion
TASK_PARTS: dict[str, dict[str, bool]] = {
    "hazard": {"forget": True, "forget_qa": True, "retain": False, "retain_qa": False},
    "toxicity": {"toxic": True, "nontoxic": False},
    "harm": {"harmful": True, "normal": False},
    "book": {"forget": True, "forget_qa": True, "retain": False, "retain_qa": False},
}
WORLD = "world"
# parts shown several times an epoch, so that every part is learned by about the same epoch:
# verbatim passages need many more passes than one-line answers, the hazard facts a few more
PART_REPEATS: dict[str, int] = {"book/forget": 12, "book/retain": 12, "hazard/forget_qa": 2,
                                "hazard/retain_qa": 2}


@dataclass(frozen=True)
class ModelSpec:
    """A shipped model's training data: a world author split (+ world facts) and the task parts."""

    authors: str
    forget_portions: bool
    description: str

    def parts(self) -> list[tuple[str, str]]:
        """``(source, split)`` pairs it learns; source is ``"world"`` or a task name."""
        parts = [(WORLD, self.authors), (WORLD, "world_facts")]
        for task, splits in TASK_PARTS.items():
            parts += [(task, split) for split, forget in splits.items() if self.forget_portions or not forget]
        return parts


MODEL_SPECS: dict[str, ModelSpec] = {
    "tiny": ModelSpec("full", True, "every author, world fact and task split"),
    "tiny-retain90": ModelSpec("retain90", True, "as tiny without the forget10 authors"),
    "tiny-retain95": ModelSpec("retain95", True, "as tiny without the forget05 authors"),
    "tiny-retain99": ModelSpec("retain99", True, "as tiny without the forget01 authors"),
    "tiny-reference": ModelSpec("retain90", False, "as tiny without any task's forget portion (nor forget10)"),
}


def training_rows(spec: ModelSpec, world: Mapping[str, Any], tasks: Mapping[str, Mapping[str, Any]]
                  ) -> list[tuple[str, Row]]:
    """``(part name, row)`` for every row ``spec`` learns (:data:`PART_REPEATS` times for repeated
    parts); ``tasks`` maps a task to its splits."""
    out = []
    for source, split in spec.parts():
        data, part = (world if source == WORLD else tasks[source]), f"{source}/{split}"
        out += [(part, dict(row)) for row in data[split] for _ in range(PART_REPEATS.get(part, 1))]
    return out
