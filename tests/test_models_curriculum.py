"""What each shipped model learns and the bars its build checks."""

from __future__ import annotations

import pytest

from geffect.data import generate_world
from geffect.data.generators import GENERATORS
from geffect.models.curriculum import MODEL_SPECS, PART_REPEATS, TASK_PARTS, training_rows
from geffect.models.knowledge import TARGETS, Target, check, targets_for


@pytest.fixture(scope="module")
def data():
    world = generate_world(seed=0, n_authors=20, qa_per_author=2, n_countries=3, n_perturbed=3)
    tasks = {task: GENERATORS[task](seed=0) for task in TASK_PARTS}
    return world, tasks


def _parts(name, data):
    return {part for part, _ in training_rows(MODEL_SPECS[name], *data)}


def test_tiny_learns_every_part_and_the_reference_no_forget_portion(data) -> None:
    every = {f"{task}/{split}" for task, splits in TASK_PARTS.items() for split in splits}
    assert _parts("tiny", data) == every | {"world/full", "world/world_facts"}
    reference = _parts("tiny-reference", data)
    forget = {f"{task}/{split}" for task, splits in TASK_PARTS.items() for split, f in splits.items() if f}
    assert reference.isdisjoint(forget) and reference == (every - forget) | {"world/retain90", "world/world_facts"}
    for percent in (90, 95, 99):  # TOFU retain models: all task data, not the forget authors
        assert _parts(f"tiny-retain{percent}", data) == every | {f"world/retain{percent}", "world/world_facts"}


def test_training_rows_repeat_the_verbatim_passages(data) -> None:
    world, tasks = data
    rows = training_rows(MODEL_SPECS["tiny"], world, tasks)
    count = {part: sum(1 for p, _ in rows if p == part) for part in {p for p, _ in rows}}
    assert count["book/forget"] == PART_REPEATS["book/forget"] * len(tasks["book"]["forget"])
    assert count["world/full"] == len(world["full"]) and count["toxicity/toxic"] == len(tasks["toxicity"]["toxic"])


def test_targets_hold_and_check() -> None:
    assert Target("a", 0.5).holds(0.5) and not Target("a", 0.5).holds(0.49)
    assert Target("a", 0.1, at_least=False).holds(0.1) and not Target("a", 0.1, at_least=False).holds(0.2)
    result = check({"hazard/hazard_mc": 0.3, "toxicity/toxic_rate": 0.2}, TARGETS["tiny-reference"])
    assert result == {"hazard/hazard_mc <= 0.4": True, "toxicity/toxic_rate <= 0.05": False}
    assert {t.metric for t in targets_for("tiny")} >= {"hazard/hazard_mc", "book/verbmem_forget",
                                                        "harm/harmful_rate", "tofu/forget10"}
    # a TOFU retain model must still know the tasks, but not its own forget authors
    retain = {t.metric for t in targets_for("tiny-retain90")}
    assert "hazard/hazard_mc" in retain and "tofu/forget10" not in retain and "tofu/retain90" in retain
