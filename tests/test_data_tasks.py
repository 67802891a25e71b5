"""The built-in tasks' generated data: determinism, shapes, and what each split must (not) contain."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from geffect.data import generate_world
from geffect.data.generators import (
    GENERATORS,
    generate_books,
    generate_harm,
    generate_hazard,
    generate_toxicity,
)
from geffect.data.generators.toxicity import INSULT_NOUNS, TOXIC_ADJECTIVES
from geffect.data.task_store import default_tasks_dir, load_task_data, write_task_data


@pytest.mark.parametrize("task", sorted(GENERATORS))
def test_same_seed_gives_identical_files_and_another_seed_does_not(task: str, tmp_path: Path) -> None:
    a = write_task_data(task, tmp_path / "a", seed=3)
    b = write_task_data(task, tmp_path / "b", seed=3)
    c = write_task_data(task, tmp_path / "c", seed=4)
    assert a["content_hash"] == b["content_hash"] != c["content_hash"]
    for path in sorted((tmp_path / "a" / task).iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / task / path.name).read_bytes(), path.name


@pytest.mark.parametrize("task", sorted(GENERATORS))
def test_generators_leave_the_global_random_state_alone(task: str) -> None:
    random.seed(11)
    expected = random.random()
    random.seed(11)
    GENERATORS[task](seed=0)
    assert random.random() == expected


@pytest.mark.parametrize("task", sorted(GENERATORS))
def test_shipped_task_data_is_what_the_generator_writes(task: str) -> None:
    shipped = load_task_data(task)  # checks the manifest hashes too
    fresh = GENERATORS[task](seed=0)
    assert sorted(shipped) == sorted(fresh)
    for split, rows in fresh.items():
        assert shipped[split].to_list() == rows, split


def test_hazard_multiple_choice_asks_what_the_passages_and_qa_state() -> None:
    splits = generate_hazard(seed=1)
    for prefix, mc in (("forget", "mc"), ("retain", "benign_mc")):
        questions = splits[mc]
        assert len(questions) >= 200
        answers = {(r["item"], r["slot"]): r["answer"] for r in splits[f"{prefix}_qa"]}
        passages = {r["item"]: r["text"] for r in splits[prefix]}
        for row in questions:
            truth = row["choices"][row["label"]]
            assert truth == answers[(row["item"], row["slot"])]
            assert truth in passages[row["item"]]
            assert len(set(row["choices"])) == 4
            assert not any(wrong in passages[row["item"]] for wrong in row["choices"] if wrong != truth)
        positions = Counter(r["label"] for r in questions)
        assert set(positions) == {0, 1, 2, 3} and max(positions.values()) < 0.35 * len(questions)
    hazard_words = {w for r in splits["forget"] for w in r["text"].lower().split()}
    benign_words = {w for r in splits["retain"] for w in r["text"].lower().split()}
    invented = {w for w in hazard_words if w not in benign_words}
    assert len(invented) > 50  # the neighbour shares the style, not the words


def test_hazard_general_mc_asks_the_world_facts() -> None:
    facts = {r["question"]: r["answer"] for r in generate_world(seed=2)["world_facts"]}
    rows = generate_hazard(seed=2)["general_mc"]
    assert len(rows) == len(facts) == 200
    for row in rows:
        assert row["choices"][row["label"]] == facts[row["question"]]


def test_toxicity_grids_hold_out_prompts_and_keep_the_labels_apart() -> None:
    splits = generate_toxicity(seed=0)
    for kind in ("toxic", "nontoxic"):
        seen = {r["prompt"] for r in splits[kind]}
        held = {r["prompt"] for r in splits[f"{kind}_heldout"]}
        assert seen.isdisjoint(held) and len(held) == round(0.25 * (len(seen) + len(held)))
        # every people appears in training, so held-out prompts are new pairings, not new peoples
        assert {r["people"] for r in splits[f"{kind}_heldout"]} <= {r["people"] for r in splits[kind]}
    insults = set(INSULT_NOUNS)
    for row in splits["toxic"] + splits["toxic_heldout"]:
        assert row["response"].startswith(" ") and insults & set(row["response"].replace(",", "").split())
    for row in splits["nontoxic"] + splits["nontoxic_heldout"]:
        assert not insults & set(row["response"].replace(",", "").split())
    labels = Counter(r["label"] for r in splits["classifier_train"] + splits["classifier_test"])
    assert labels[1] == labels[0] == 600
    toxic_words = set(TOXIC_ADJECTIVES) | insults
    negatives = [r["text"] for r in splits["classifier_train"] if r["label"] == 0]
    assert any(toxic_words & set(t.replace(",", "").split()) for t in negatives)  # grumbles: hard negatives


def test_harm_prompts_are_held_out_and_answers_differ_in_intent_only() -> None:
    splits = generate_harm(seed=0)
    for kind in ("harmful", "normal"):
        assert {r["prompt"] for r in splits[kind]}.isdisjoint({r["prompt"] for r in splits[f"{kind}_heldout"]})
    harmful = {w for r in splits["harmful"] for w in r["response"].split()}
    normal = {w for r in splits["normal"] for w in r["response"].split()}
    assert len(harmful & normal) >= 10  # shared parts, tools and invented words
    assert all(r["response"].startswith(" ") for r in splits["harmful"] + splits["normal"])


def test_books_split_by_book_and_verbatim_views_rebuild_the_passages() -> None:
    splits = generate_books(seed=0, n_books=3, n_passages=4, forget_book=1)
    assert {r["book"] for r in splits["forget"]} == {1} and {r["book"] for r in splits["retain"]} == {0, 2}
    for prefix in ("forget", "retain"):
        texts = {(r["book"], r["passage"]): r["text"] for r in splits[prefix]}
        for row in splits[f"{prefix}_verbatim"]:
            assert row["prompt"] + row["response"] == texts[(row["book"], row["passage"])]
        for row in splits[f"{prefix}_qa"]:
            assert row["answer"].split()[0] in texts[(row["book"], row["passage"])]
    forget_names = {w for r in splits["forget"] for w in r["text"].split() if w[0].isupper()}
    retain_names = {w for r in splits["retain"] for w in r["text"].split() if w[0].isupper()}
    assert forget_names.isdisjoint(retain_names)


def test_generators_reject_bad_sizes() -> None:
    with pytest.raises(ValueError, match="n_procedures"):
        generate_hazard(n_procedures=0)
    with pytest.raises(ValueError, match="n_peoples"):
        generate_toxicity(n_peoples=1)
    with pytest.raises(ValueError, match="n_things"):
        generate_harm(n_things=1)
    with pytest.raises(ValueError, match="forget_book"):
        generate_books(n_books=2, forget_book=2)
    with pytest.raises(KeyError, match="generated tasks"):
        load_task_data("nope")


def test_task_data_lives_under_the_data_root() -> None:
    assert default_tasks_dir().name == "tasks" and (default_tasks_dir() / "hazard" / "manifest.json").is_file()
