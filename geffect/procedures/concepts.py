"""Concepts to forget without a forget set: what to elicit, how to score it, what to keep.

A :class:`Concept` names an instruction pool (shipped as ``data/instructions/<name>.jsonl``), a
scorer (``score(texts) -> list[float]``: how much of the concept a text holds), the row kind its
prompts take, the threshold above which a completion counts as revealing the concept, the
retain split kept beside it, the *true* forget data (used only for comparisons and probes, never
by Reveal and Release itself) and an evaluation suite. Concepts are registered by name, like
objectives and tasks, so a user adds one in a few lines with :func:`register_concept`.

Built-ins: ``persons`` (everything the target knows about the world's people; places and things
are kept) and ``toxicity`` (the toxicity task's invented insults).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geffect.data.paths import data_root

__all__ = ["Concept", "get_concept", "list_concepts", "load_instructions", "register_concept"]


@dataclass(frozen=True)
class Concept:
    """What Reveal and Release needs to know about a concept (see the module docstring)."""

    name: str
    description: str
    instructions: str  # pool file: a path, or a name under data/instructions/
    scorer: Callable[[], Any]  # builds the scorer (an object with score(texts) -> list[float])
    kind: str = "qa"  # "qa": instruction asked in the QA format, rows question/answer; "prompt": raw prompt
    threshold: float = 0.5  # a completion scoring >= threshold reveals the concept (forget data)
    clean_threshold: float = 0.05  # a completion scoring < clean_threshold is clean (retain data)
    stop_reward: float = 0.05  # stop when the best instruction's mean reward falls under this
    task: str | None = None  # the task whose splits are named below (None: the embedded world)
    retain: str = "retain"  # retain split kept beside the revealed data
    true_forget: str = "forget"  # the concept's real forget data (comparison runs only)
    heldout_forget: str = "forget"  # held-out real forget data: the probe of the data-mismatch study
    evaluate: Callable[..., dict[str, float]] | None = None  # fn(model, tokenizer, max_examples=, model_name=)
    metric: str = ""  # the evaluation key that measures the concept (lower = more forgotten)
    utility: tuple[str, ...] = ()  # evaluation keys that should stay (higher = better)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def pool(self) -> list[str]:
        """The candidate instructions."""
        return load_instructions(self.instructions)


_CONCEPTS: dict[str, Concept] = {}


def register_concept(concept: Concept, replace: bool = False) -> Concept:
    """Register ``concept`` under its name (re-registering needs ``replace=True``)."""
    if concept.kind not in ("qa", "prompt"):
        raise ValueError(f"concept {concept.name!r}: kind must be 'qa' or 'prompt', got {concept.kind!r}")
    if concept.name in _CONCEPTS and not replace:
        raise ValueError(f"a concept named {concept.name!r} is already registered; pass replace=True")
    _CONCEPTS[concept.name] = concept
    return concept


def get_concept(name: str | Concept) -> Concept:
    """The registered concept ``name`` (a :class:`Concept` passes through)."""
    if isinstance(name, Concept):
        return name
    _load_builtins()
    try:
        return _CONCEPTS[name]
    except KeyError:
        raise KeyError(f"unknown concept {name!r}; known concepts: {', '.join(list_concepts())}") from None


def list_concepts() -> list[str]:
    _load_builtins()
    return list(_CONCEPTS)


def _load_builtins() -> None:
    from geffect.procedures import builtin_concepts  # noqa: F401  (registers on import)


def load_instructions(source: str | Path) -> list[str]:
    """Instructions from a JSONL file with an ``instruction`` field, or a shipped pool name."""
    path = Path(source)
    if not path.is_file():
        path = data_root() / "instructions" / f"{source}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no instruction pool {str(source)!r} (looked for {str(path)!r})")
    pool = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {line_no}: not valid JSON ({err.msg})") from None
        text = row.get("instruction") if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}, line {line_no}: missing a non-empty string field 'instruction'")
        pool.append(text)
    if len(set(pool)) != len(pool):
        raise ValueError(f"{path}: the instruction pool holds duplicates")
    if not pool:
        raise ValueError(f"{path}: the instruction pool is empty")
    return pool
