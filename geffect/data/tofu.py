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

import re
from pathlib import Path
from typing import Any

import datasets

from geffect.data.files import Record, hub_records, read_records
from geffect.data.loader import check_records
from geffect.data.store import QA_FEATURES

TOFU_AUTHORS = 200
TOFU_QA_PER_AUTHOR = 20


def first_author(split: str) -> int | None:
    """Author index of a TOFU split's first row, or None when rows are not author blocks."""
    if split == "full" or re.fullmatch(r"retain\d\d", split):
        return 0
    match = re.fullmatch(r"forget(\d\d)(_perturbed)?", split)
    if match:
        return TOFU_AUTHORS - TOFU_AUTHORS * int(match.group(1)) // 100
    return None


def to_schema_row(row: dict[str, Any], index: int, split: str) -> dict[str, Any]:
    """Map one checked TOFU row (row ``index`` of ``split``) onto the world schema."""
    question, answer = row["question"], row["answer"]
    start = first_author(split)
    return {
        "question": question,
        "answer": answer,
        "paraphrased_question": row.get("paraphrased_question") or question,
        "paraphrased_answer": row.get("paraphrased_answer") or answer,
        "perturbed_answer": row.get("perturbed_answer") or [],
        "author": -1 if start is None else start + index // TOFU_QA_PER_AUTHOR,
    }


def _tofu_records(source: str | Path, split: str) -> tuple[list[Record], str]:
    folder = Path(source).expanduser()
    if not folder.is_dir():
        return hub_records(str(source), "train", config=split), f"{source}:{split}"
    candidates = [folder / f"{split}.json", folder / f"{split}.jsonl"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        available = sorted(p.stem for p in folder.glob("*.json*"))
        raise FileNotFoundError(f"no TOFU file for split {split!r} in {folder} (found: {available})")
    return read_records(path), str(path)


def load_tofu(source: str | Path, split: str) -> datasets.Dataset:
    """TOFU ``split`` (e.g. ``"forget10_perturbed"``) from a local folder of its JSON files or a hub id.

    ``source`` is a directory holding ``<split>.json`` (JSON lines, TOFU's format) or a
    Hugging Face dataset id such as ``"locuslab/TOFU"`` (downloaded with
    ``datasets.load_dataset``; needs network access). Returns a ``Dataset`` with the
    columns of :func:`geffect.data.load_world`. Malformed records raise ``ValueError``
    naming the file, row and offending field.
    """
    records, label = _tofu_records(source, split)
    _, rows = check_records(records, label, kind="qa")
    return datasets.Dataset.from_list([to_schema_row(row, i, split) for i, row in enumerate(rows)],
                                      features=QA_FEATURES)
