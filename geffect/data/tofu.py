"""Load the real TOFU benchmark (Maini et al., 2024) in geffect's world schema.

TOFU ships one JSON-lines file per split (``forget10.json``, ``forget10_perturbed.json``,
``retain90.json``, ``world_facts.json``, ...). Plain splits carry ``question`` and
``answer``; the perturbed views add ``paraphrased_answer``, ``perturbed_answer`` (a
list) and sometimes ``paraphrased_question``. They are mapped onto the columns of
:func:`geffect.data.load_world`: a missing paraphrase falls back to the original
text, a missing ``perturbed_answer`` becomes an empty list. TOFU has no author
column; its 200 authors have 20 consecutive questions each, so ``author`` is inferred
from the row position in the author splits (``full``, ``forgetNN``, ``retainNN`` and
their ``_perturbed`` views) and is -1 elsewhere (world facts, real authors,
``retain_perturbed``, whose rows TOFU samples from several authors).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import datasets

from geffect.data.store import QA_FEATURES

TOFU_AUTHORS = 200
TOFU_QA_PER_AUTHOR = 20
REQUIRED_FIELDS = ("question", "answer")


def first_author(split: str) -> int | None:
    """Author index of a TOFU split's first row, or None when rows are not author blocks."""
    if split == "full" or re.fullmatch(r"retain\d\d", split):
        return 0
    match = re.fullmatch(r"forget(\d\d)(_perturbed)?", split)
    if match:
        return TOFU_AUTHORS - TOFU_AUTHORS * int(match.group(1)) // 100
    return None


def _text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def to_schema_row(raw: Any, index: int, split: str, where: str) -> dict[str, Any]:
    """Map one raw TOFU record (row ``index`` of ``split``) onto the world schema.

    ``where`` names the record in error messages (file and line).
    """
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    for field in REQUIRED_FIELDS:
        if field not in raw:
            raise ValueError(f"{where}: missing field {field!r} (has {sorted(raw)})")
    question = _text(raw["question"], where, "question")
    answer = _text(raw["answer"], where, "answer")
    perturbed = raw.get("perturbed_answer", [])
    if isinstance(perturbed, str):
        perturbed = [perturbed]
    if not isinstance(perturbed, list) or not all(isinstance(p, str) for p in perturbed):
        raise ValueError(f"{where}: field 'perturbed_answer' must be a list of strings")
    start = first_author(split)
    return {
        "question": question,
        "answer": answer,
        "paraphrased_question": _text(raw.get("paraphrased_question", question), where, "paraphrased_question"),
        "paraphrased_answer": _text(raw.get("paraphrased_answer", answer), where, "paraphrased_answer"),
        "perturbed_answer": perturbed,
        "author": -1 if start is None else start + index // TOFU_QA_PER_AUTHOR,
    }


def _records(path: Path) -> list[tuple[Any, str]]:
    """Raw records of a TOFU file with their location (JSON lines, or one JSON array)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from err
        return [(item, f"{path}, row {i + 1}") for i, item in enumerate(items)]
    records = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, row {len(records) + 1} (line {line_number})"
        try:
            records.append((json.loads(line), where))
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err.msg})") from err
    return records


def _load_local(folder: Path, split: str) -> list[dict[str, Any]]:
    candidates = [folder / f"{split}.json", folder / f"{split}.jsonl"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        available = sorted(p.stem for p in folder.glob("*.json*"))
        raise FileNotFoundError(f"no TOFU file for split {split!r} in {folder} (found: {available})")
    return [to_schema_row(raw, i, split, where) for i, (raw, where) in enumerate(_records(path))]


def _load_hub(source: str, split: str) -> list[dict[str, Any]]:
    data = datasets.load_dataset(source, split, split="train")
    return [to_schema_row(raw, i, split, f"{source}:{split}, row {i + 1}") for i, raw in enumerate(data)]


def load_tofu(source: str | Path, split: str) -> datasets.Dataset:
    """TOFU ``split`` (e.g. ``"forget10_perturbed"``) from a local folder of its JSON files or a hub id.

    ``source`` is a directory holding ``<split>.json`` (JSON lines, TOFU's format) or a
    Hugging Face dataset id such as ``"locuslab/TOFU"`` (downloaded with
    ``datasets.load_dataset``; needs network access). Returns a ``Dataset`` with the
    columns of :func:`geffect.data.load_world`. Malformed records raise ``ValueError``
    naming the file, row and offending field.
    """
    folder = Path(source).expanduser()
    rows = _load_local(folder, split) if folder.is_dir() else _load_hub(str(source), split)
    return datasets.Dataset.from_list(rows, features=QA_FEATURES)
