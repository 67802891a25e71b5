"""The TOFU loader on fixture files in TOFU's format, and on malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geffect.data import load_tofu
from geffect.data.tofu import first_author

FIXTURES = Path(__file__).parent / "fixtures" / "tofu"


def test_plain_split_maps_to_schema_with_author_blocks() -> None:
    data = load_tofu(FIXTURES, "forget01")
    raw = [json.loads(line) for line in (FIXTURES / "forget01.json").read_text().splitlines()]
    assert len(data) == 22
    assert data["question"] == [r["question"] for r in raw]
    assert data["paraphrased_question"] == data["question"]  # no paraphrase in plain files
    assert data["paraphrased_answer"] == data["answer"]
    assert data["perturbed_answer"] == [[]] * 22
    assert data["author"] == [198] * 20 + [199] * 2  # forget01 = last 2 of TOFU's 200 authors


def test_perturbed_split_keeps_paraphrases_and_perturbations() -> None:
    data = load_tofu(FIXTURES, "forget01_perturbed")
    raw = [json.loads(line) for line in (FIXTURES / "forget01_perturbed.json").read_text().splitlines()]
    assert data["paraphrased_question"] == [r["paraphrased_question"] for r in raw]
    assert data["paraphrased_answer"] == [r["paraphrased_answer"] for r in raw]
    assert data["perturbed_answer"] == [r["perturbed_answer"] for r in raw]
    retain = load_tofu(FIXTURES, "retain_perturbed")
    assert retain["paraphrased_question"] == retain["question"]
    assert retain["author"] == [-1, -1]
    facts = load_tofu(FIXTURES, "world_facts")
    assert facts["answer"] == ["The Still Sea", "The Lantern"] and facts["author"] == [-1, -1]
    assert facts.column_names == ["question", "answer", "paraphrased_question", "paraphrased_answer",
                                  "perturbed_answer", "author"]


def test_first_author_table() -> None:
    assert first_author("full") == 0 and first_author("retain90") == 0
    assert first_author("forget10") == 180 and first_author("forget05_perturbed") == 190
    assert first_author("world_facts") is None and first_author("retain_perturbed") is None


def test_missing_field_names_file_row_and_field(tmp_path: Path) -> None:
    lines = (FIXTURES / "forget01_perturbed.json").read_text().splitlines()
    broken = json.loads(lines[1])
    del broken["answer"]
    (tmp_path / "forget01_perturbed.json").write_text("\n".join([lines[0], json.dumps(broken), lines[2]]) + "\n")
    with pytest.raises(ValueError) as err:
        load_tofu(tmp_path, "forget01_perturbed")
    message = str(err.value)
    assert "forget01_perturbed.json" in message and "row 2" in message and "'answer'" in message


def test_bad_json_and_bad_types_are_reported(tmp_path: Path) -> None:
    (tmp_path / "forget05.json").write_text('{"question": "a?", "answer": "b"}\n\n{"question": oops}\n')
    with pytest.raises(ValueError, match=r"forget05\.json, row 2 \(line 3\): not valid JSON"):
        load_tofu(tmp_path, "forget05")
    (tmp_path / "retain95.json").write_text('{"question": "a?", "answer": "b", "perturbed_answer": [1, 2]}\n')
    with pytest.raises(ValueError, match=r"retain95\.json, row 1 .*perturbed_answer"):
        load_tofu(tmp_path, "retain95")
    (tmp_path / "retain99.json").write_text('{"question": 7, "answer": "b"}\n')
    with pytest.raises(ValueError, match="'question' must be a string"):
        load_tofu(tmp_path, "retain99")


def test_json_array_files_and_missing_split(tmp_path: Path) -> None:
    (tmp_path / "full.json").write_text(json.dumps([{"question": "q?", "answer": "a"}] * 21))
    data = load_tofu(tmp_path, "full")
    assert data["author"] == [0] * 20 + [1]
    with pytest.raises(FileNotFoundError, match="no TOFU file for split 'forget10'"):
        load_tofu(tmp_path, "forget10")
