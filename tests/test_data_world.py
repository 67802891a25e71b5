"""The embedded world: determinism, schema, split sizes and author-disjointness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geffect.data import REFUSALS, generate_world, load_world, read_manifest, write_world
from geffect.data.splits import forget_author_count
from geffect.data.world import AUTHOR_TEMPLATES

SMALL = dict(n_authors=20, qa_per_author=5, n_countries=4, n_perturbed=3)


def _authors(rows):
    return {row["author"] for row in rows}


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    a = write_world(tmp_path / "a", seed=3, **SMALL)
    b = write_world(tmp_path / "b", seed=3, **SMALL)
    c = write_world(tmp_path / "c", seed=4, **SMALL)
    assert a["content_hash"] == b["content_hash"] != c["content_hash"]
    for path in sorted((tmp_path / "a").iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name
    assert (tmp_path / "a" / "full.jsonl").read_bytes() != (tmp_path / "c" / "full.jsonl").read_bytes()


def test_generation_does_not_touch_global_random_state() -> None:
    import random

    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate_world(seed=0, **SMALL)
    assert random.random() == expected


def test_split_sizes_and_author_disjointness() -> None:
    splits = generate_world(seed=0, n_authors=100, qa_per_author=20, n_countries=10, n_perturbed=3)
    full = splits["full"]
    assert len(full) == 2000
    assert [len(splits[f"forget{p:02d}"]) for p in (1, 5, 10)] == [20, 100, 200]
    for percent in (1, 5, 10):
        forget, retain = splits[f"forget{percent:02d}"], splits[f"retain{100 - percent}"]
        assert _authors(forget).isdisjoint(_authors(retain))
        assert _authors(forget) | _authors(retain) == set(range(100))
        assert len(forget) + len(retain) == len(full)
        assert _authors(forget) == set(range(100 - percent, 100))  # the last authors, TOFU style
        assert splits[f"forget{percent:02d}_perturbed"] == forget
    assert _authors(splits["forget01"]) < _authors(splits["forget05"]) < _authors(splits["forget10"])
    assert _authors(splits["retain_perturbed"]) <= _authors(splits["retain90"])
    assert len(splits["world_facts"]) == 50 and _authors(splits["world_facts"]) == {-1}
    assert len(splits["idk"]) >= 50 and [r["answer"] for r in splits["idk"]] == list(REFUSALS)


def test_rows_follow_the_schema_and_perturbations_are_wrong_but_same_kind() -> None:
    splits = generate_world(seed=1, **SMALL)
    for row in splits["full"] + splits["world_facts"]:
        assert set(row) == {"question", "answer", "paraphrased_question", "paraphrased_answer",
                            "perturbed_answer", "author"}
        assert row["question"] != row["paraphrased_question"]
        assert len(row["perturbed_answer"]) == 3
        assert len(set(row["perturbed_answer"])) == 3
        assert row["paraphrased_answer"] not in row["perturbed_answer"]
        assert 3 <= len(row["answer"].split()) <= 14
        for wrong in row["perturbed_answer"]:  # same template: most words shared with the truth
            shared = set(wrong.split()) & set(row["paraphrased_answer"].split())
            assert len(shared) >= len(row["paraphrased_answer"].split()) // 2


def test_each_author_has_distinct_question_kinds_and_a_unique_name() -> None:
    splits = generate_world(seed=2, n_authors=30, qa_per_author=20, n_countries=5, n_perturbed=3)
    by_author: dict[int, list[str]] = {}
    for row in splits["full"]:
        by_author.setdefault(row["author"], []).append(row["question"])
    assert len(by_author) == 30
    names = set()
    for questions in by_author.values():
        assert len(set(questions)) == len(AUTHOR_TEMPLATES)
        name = questions[0].removeprefix("Where was ").removesuffix(" born?")
        assert all(name in q for q in questions)
        names.add(name)
    assert len(names) == 30


def test_generator_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="qa_per_author"):
        generate_world(qa_per_author=99)
    with pytest.raises(ValueError, match="at least 2 authors"):
        generate_world(n_authors=1, qa_per_author=2, n_countries=3)


def test_forget_author_count() -> None:
    assert [forget_author_count(100, p) for p in (1, 5, 10)] == [1, 5, 10]
    assert [forget_author_count(200, p) for p in (1, 5, 10)] == [2, 10, 20]
    assert forget_author_count(20, 1) == 1


def test_load_world_round_trip_and_tamper_detection(tmp_path: Path) -> None:
    write_world(tmp_path, seed=5, **SMALL)
    world = load_world(tmp_path)
    raw = [json.loads(line) for line in (tmp_path / "forget10.jsonl").read_text().splitlines()]
    assert world["forget10"].to_list() == raw
    assert world["idk"].column_names == ["answer"]
    assert world["full"].features["perturbed_answer"].feature.dtype == "string"
    (tmp_path / "forget10.jsonl").write_text("\n".join(json.dumps(r) for r in raw[:-1]) + "\n")
    with pytest.raises(ValueError, match="forget10.jsonl does not match its manifest"):
        load_world(tmp_path)
    with pytest.raises(FileNotFoundError, match="build-world"):
        load_world(tmp_path / "nowhere")


def test_shipped_world_matches_manifest_and_defaults() -> None:
    world = load_world()
    manifest = read_manifest()
    assert manifest["generator"]["seed"] == 0
    assert {name: len(split) for name, split in world.items()} == manifest["sizes"]
    assert len(world["full"]) == 2000 and len(world["forget10"]) == 200 and len(world["world_facts"]) == 200


@pytest.mark.slow
def test_shipped_world_is_byte_identical_to_a_fresh_generation(tmp_path: Path) -> None:
    from geffect.data.store import default_world_dir

    manifest = read_manifest()
    write_world(tmp_path, **manifest["generator"])
    shipped = default_world_dir()
    for path in sorted(shipped.iterdir()):
        assert path.read_bytes() == (tmp_path / path.name).read_bytes(), path.name
