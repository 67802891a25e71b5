"""One loader, one validation: user files round trip in every format and row kind; every bad file is
one line naming file, row and field; a fuzz of truncated and field-deleted files through every loader."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pandas as pd
import pytest

from geffect.data import DataError, load_rows, load_tofu, write_splits
from geffect.data.files import looks_like_hub_id
from geffect.errors import InputError
from geffect.tasks import Task, TaskData

ROWS = {
    "qa": [{"question": f"What does gadget {i} do?", "answer": f"Gadget {i} hums, ünïcode ✓."} for i in range(6)],
    "prompt": [{"prompt": f"Write line {i}:", "response": f" line {i}, with a comma"} for i in range(6)],
    "text": [{"text": f"Passage {i}: \"quoted\" words, commas, and a newline\nin it."} for i in range(6)],
}
FORMATS = ("jsonl", "json", "csv", "parquet")


def write(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` in the format named by ``path``'s suffix."""
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("kind", list(ROWS))
@pytest.mark.parametrize("fmt", FORMATS)
def test_user_files_round_trip(kind, fmt, tmp_path):
    path = write(tmp_path / f"mine.{fmt}", ROWS[kind])
    data = load_rows(path)
    assert data.to_list() == ROWS[kind]
    assert load_rows(tmp_path, "mine").to_list() == ROWS[kind]  # a folder and a split name
    source = TaskData(Task(name="mine", description="", forget="f", splits={"f": str(path)}))
    assert source.split("f").to_list() == ROWS[kind] and source.kind("f") == kind
    assert TaskData("files").split(str(path)).to_list() == ROWS[kind]  # a file as a split name


def test_extra_columns_and_optional_fields_are_kept_and_checked(tmp_path):
    rows = [{"question": "Q?", "answer": "A.", "perturbed_answer": "B.", "source": "web"}]
    assert load_rows(rows).to_list() == [{**rows[0], "perturbed_answer": ["B."]}]
    with pytest.raises(DataError, match=r"rows, row 1: field 'perturbed_answer' must be a list of strings, got int"):
        load_rows([{"question": "Q?", "answer": "A.", "perturbed_answer": 3}])
    mixed = [{"text": "a", "id": 1}, {"text": "b", "id": "two"}]
    with pytest.raises(DataError, match=r"column 'id' mixes value types \(int, str\)"):
        load_rows(mixed, label="my rows")


BAD_FILES = [
    ("missing.jsonl", '{"question": "Q?", "answer": "A."}\n{"question": "Q2?"}\n',
     r"missing\.jsonl, row 2 \(line 2\): missing field 'answer' \(the row has \['question'\]\)"),
    ("integer.jsonl", '{"question": "Q?", "answer": 42}\n',
     r"integer\.jsonl, row 1 \(line 1\): field 'answer' must be a string, got int 42"),
    ("null.jsonl", '{"question": "Q?", "answer": null}\n', r"null\.jsonl, row 1 \(line 1\): missing field 'answer'"),
    ("blank.jsonl", '{"prompt": "P", "response": "   "}\n', r"blank\.jsonl, row 1 \(line 1\): field 'response' is empty"),
    ("badjson.jsonl", '{"text": "fine"}\n\n{"text": "broken\n', r"badjson\.jsonl, row 2 \(line 3\): not valid JSON"),
    ("empty.jsonl", "", r"empty\.jsonl: empty \(no rows\)"),
    ("empty.csv", "", r"empty\.csv: empty \(no rows\)"),
    ("header.csv", "question,answer\n", r"header\.csv: empty \(no rows\)"),
    ("unknown.jsonl", '{"title": "T", "body": "B"}\n',
     r"unknown\.jsonl: no recognised row kind in columns \['body', 'title'\]"),
    ("notobject.jsonl", '{"text": "T"}\n["Q?", "A."]\n', r"notobject\.jsonl, row 2 \(line 2\): expected an object"),
    ("short.csv", "question,answer\nQ?,A.\nQ2?\n", r"short\.csv, row 2 \(line 3\): missing field 'answer'"),
    ("long.csv", "text\nfine\nx,y\n", r"long\.csv, row 2 \(line 3\): 2 fields, but the header has 1 \(text\)"),
    ("quote.csv", 'text\n"never closed\n', r"quote\.csv, line \d: not valid CSV"),
    ("latin1.jsonl", b'{"text": "caf\xe9"}\n', r"latin1\.jsonl, line 1: not UTF-8 text"),
    ("torn.parquet", b"PAR1\x00\x01garbage", r"torn\.parquet: not a readable parquet file"),
    ("table.xlsx", "x", r"table\.xlsx: unknown data file type '\.xlsx'"),
]


@pytest.mark.parametrize("name, content, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_give_one_line_naming_file_row_and_field(name, content, message, tmp_path):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as err:
        load_rows(path)
    text = str(err.value)
    assert re.search(message, text), text
    assert "\n" not in text and str(tmp_path) in text


def test_parquet_types_and_missing_paths(tmp_path):
    write(tmp_path / "ints.parquet", [{"question": "Q?", "answer": 7}])
    with pytest.raises(DataError, match=r"ints\.parquet, row 1: field 'answer' must be a string, got int 7"):
        load_rows(tmp_path / "ints.parquet")
    with pytest.raises(DataError, match=r"nothere\.csv: no such file"):
        load_rows(tmp_path / "nothere.csv")
    with pytest.raises(DataError, match="no such file or folder"):
        load_rows(str(tmp_path / "nothere"))
    with pytest.raises(DataError, match=r"no split 'forget' \(found: ints\)"):
        load_rows(tmp_path, "forget")


def test_hub_ids_are_tried_only_when_they_could_be_one_and_never_wait_offline(tmp_path, monkeypatch):
    assert looks_like_hub_id("locuslab/TOFU") and not looks_like_hub_id("data/forget.jsonl")
    assert not looks_like_hub_id("forget10") and not looks_like_hub_id(str(tmp_path))
    import geffect.sources

    monkeypatch.setattr(geffect.sources, "hub_reachable", lambda *args, **kwargs: False)
    with pytest.raises(DataError, match="'someone/their-data' is not an existing file or folder, and the Hugging "
                                        "Face hub is not reachable"):
        load_rows("someone/their-data")
    with pytest.raises(InputError, match="not a TOFU folder|not reachable"):
        load_tofu("someone/tofu-copy", "forget10")


def test_hub_references_name_config_and_split(monkeypatch):
    import datasets

    import geffect.sources
    from geffect.training.config import UnlearnConfig

    calls = []

    def fake_load_dataset(dataset_id, config=None, split=None):
        calls.append((dataset_id, config, split))
        return [{"question": "Q?", "answer": "A."}, {"question": "Q2?"}] if split == "bad" else [{"text": "T"}]

    monkeypatch.setattr(geffect.sources, "hub_reachable", lambda *args, **kwargs: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    for ref, call in [("someone/data", ("someone/data", None, "train")),
                      ("someone/data:forget10", ("someone/data", "forget10", "train")),
                      ("someone/data:cfg:test", ("someone/data", "cfg", "test")),
                      ("someone/data::test", ("someone/data", None, "test"))]:
        assert looks_like_hub_id(ref) and load_rows(ref).to_list() == [{"text": "T"}] and calls[-1] == call
    with pytest.raises(DataError, match=r"^someone/data:cfg:bad, row 2: missing field 'answer'"):
        load_rows("someone/data:cfg:bad")
    assert not looks_like_hub_id("someone/data:a:b:c") and not looks_like_hub_id("pkg.tasks:TASK")
    config = UnlearnConfig(objective="ga", forget="someone/data:forget10").resolved()
    assert (config.task, config.forget) == ("files", "someone/data:forget10")


# -- fuzz: every loader on damaged copies of valid splits ---------------------------------------------


def _loaders(path: Path, kind: str):
    """Every way the same file reaches geffect: (name, call)."""
    split = path.stem
    task = Task(name="fuzz", description="", forget=split, splits={split: str(path)})
    calls = [
        ("load_rows(file)", lambda: load_rows(path)),
        ("load_rows(folder, split)", lambda: load_rows(path.parent, split)),
        ("task split file", lambda: TaskData(task).split(split)),
        ("file as a split name", lambda: TaskData("files").split(str(path))),
        ("task data folder", lambda: TaskData(Task(name="folder", description="", forget=split,
                                                   data=str(path.parent))).split(split)),
    ]
    if kind == "qa" and path.suffix in (".jsonl", ".json"):
        calls.append(("load_tofu", lambda: load_tofu(path.parent, split)))
    return calls


def _damage(rows: list[dict], fmt: str, rng: random.Random, folder: Path, case: int) -> tuple[Path, list[dict]]:
    """A damaged copy of ``rows`` (plus two extra columns) in ``fmt``: a random truncation or deleted
    fields; returns its path and the rows written."""
    path = folder / f"case{case}" / f"split.{fmt}"
    path.parent.mkdir()
    rows = [{**r, "id": i, "note": f"n{i}"} for i, r in enumerate(rows)]
    if rng.random() < 0.5:  # delete a field (or, for CSV/parquet, a whole column)
        victim = rng.choice(list(rows[0]))
        for row in rows if fmt in ("csv", "parquet") or rng.random() < 0.3 else [rng.choice(rows)]:
            row.pop(victim, None)
        if fmt in ("csv", "parquet") and not rows[0]:
            rows = [{"unrelated": "x"} for _ in rows]
        write(path, rows)
    else:  # cut the file at a random byte
        write(path, rows)
        data = path.read_bytes()
        path.write_bytes(data[: rng.randrange(len(data))])
    return path, rows


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzz_every_loader_loads_or_says_where_in_one_line(fmt, tmp_path):
    rng = random.Random(f"fuzz-{fmt}")
    outcomes = {"loaded": 0, "error": 0}
    case = 0
    for kind, valid in ROWS.items():
        for _ in range(12):
            case += 1
            path, written = _damage(valid, fmt, rng, tmp_path, case)
            for name, call in _loaders(path, kind):
                try:
                    data = call()
                except InputError as err:  # DataError / UnknownSplit: what the user sees
                    text = str(err)
                    assert "\n" not in text, (name, text)
                    assert str(path) in text or str(path.parent) in text, (name, text)
                    if "field" in text:
                        assert re.search(r"row \d+.*field '\w+'", text), (name, text)
                    outcomes["error"] += 1
                    continue
                except Exception as err:  # anything else is a traceback for the user
                    pytest.fail(f"{name} on {path} raised {type(err).__name__}: {err}")
                # loaded: the valid rows, or a prefix of them (a cut at a row boundary; in CSV, whose rows carry
                # no end marker, the last row's values may be cut short and still be valid CSV)
                loaded = data.to_list()
                assert 0 < len(loaded) <= len(valid), name
                for i, row in enumerate(loaded):
                    for field in valid[i]:
                        if i == len(loaded) - 1 and fmt == "csv":
                            assert valid[i][field].startswith(row[field]), (name, path, field)
                        else:
                            assert row[field] == valid[i][field], (name, path, field)
                outcomes["loaded"] += 1
    assert outcomes["loaded"] > 0 and outcomes["error"] > 0, outcomes  # both paths were exercised


def test_manifest_folders_detect_damage(tmp_path):
    write_splits(tmp_path, {"forget": ROWS["text"]}, {"seed": 1})
    assert load_rows(tmp_path, "forget").to_list() == ROWS["text"]
    data = (tmp_path / "forget.jsonl").read_bytes()
    (tmp_path / "forget.jsonl").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="forget"):
        load_rows(tmp_path, "forget")
