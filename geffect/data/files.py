"""Raw records of a data file (JSON lines, JSON array, CSV, parquet) or a hub dataset, each with its place.

Every reader returns ``(record, where)`` pairs, ``where`` naming the file, the row and (for text
formats) the line, so that :mod:`geffect.data.loader` can say exactly which row and field is
wrong. Anything unreadable (bad JSON, a torn CSV quote, bytes that are not UTF-8, a damaged
parquet file) is a :class:`DataError` of one line naming the file and the line.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from geffect.errors import InputError

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
Record = tuple[Any, str]  # a raw record and where it is (file, row, line)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9](:[\w.-]*){0,2}")  # owner/name[:config[:split]]


class DataError(InputError):
    """Data that cannot be used as given: the one-line message names file, row and field."""


def _decode(raw: bytes, path: Path, first_line: int = 1) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + raw[: err.start].count(b"\n")
        raise DataError(f"{path}, line {line}: not UTF-8 text") from None


def _json_records(path: Path) -> list[Record]:
    data = path.read_bytes()
    if data.lstrip()[:1] == b"[":  # one JSON array of objects
        text = _decode(data, path)
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None
        return [(item, f"{path}, row {i + 1}") for i, item in enumerate(items)]
    records: list[Record] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        line = _decode(raw, path, number)
        if not line.strip():
            continue
        where = f"{path}, row {len(records) + 1} (line {number})"
        try:
            records.append((json.loads(line), where))
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not valid JSON ({err.msg})") from None
    return records


def _csv_records(path: Path) -> list[Record]:
    text = _decode(path.read_bytes(), path)
    reader = csv.DictReader(io.StringIO(text, newline=""), restval=None, strict=True)
    records: list[Record] = []
    try:
        for row in reader:
            where = f"{path}, row {len(records) + 1} (line {reader.line_num})"
            if None in row:
                raise DataError(f"{where}: {len(row) - 1 + len(row[None])} fields, but the header has "
                                f"{len(reader.fieldnames)} ({', '.join(reader.fieldnames)})")
            records.append(({k: v for k, v in row.items() if v is not None}, where))
    except csv.Error as err:
        raise DataError(f"{path}, line {reader.line_num}: not valid CSV ({err})") from None
    if reader.fieldnames and len(set(reader.fieldnames)) != len(reader.fieldnames):
        raise DataError(f"{path}, line 1: the CSV header repeats a column name ({', '.join(reader.fieldnames)})")
    return records


def _parquet_records(path: Path) -> list[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: not a readable parquet file ({message})") from None
    return [(row, f"{path}, row {i + 1}") for i, row in enumerate(table.to_pylist())]


_READERS = {".jsonl": _json_records, ".json": _json_records, ".csv": _csv_records, ".parquet": _parquet_records}


def read_records(path: str | Path) -> list[Record]:
    """The raw records of a ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` file, with their places."""
    path = Path(path).expanduser()
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unknown data file type {path.suffix!r}; geffect reads {', '.join(DATA_SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return reader(path)


def is_data_file(name: str | Path) -> bool:
    """Whether ``name`` names a data file by its suffix (it need not exist)."""
    return Path(str(name)).suffix.lower() in _READERS


# -- hub datasets ------------------------------------------------------------------------------------


def looks_like_hub_id(name: str) -> bool:
    """``owner/name`` (optionally ``:config`` and ``:split``) that is not an existing path and has no
    data-file suffix: may be a hub dataset."""
    return bool(_HUB_ID.fullmatch(name)) and not is_data_file(name) and not Path(name).expanduser().exists()


def hub_reference(ref: str, split: str | None = None, config: str | None = None) -> tuple[str, str | None, str]:
    """(dataset id, config, split) of ``owner/name[:config[:split]]``; the reference's parts win over
    ``config`` / ``split``; the split defaults to ``train`` (``owner/name::test``: default config, split test)."""
    dataset_id, _, rest = ref.partition(":")
    named_config, _, named_split = rest.partition(":")
    return dataset_id, named_config or config, named_split or split or "train"


def hub_label(ref: str, split: str | None = None, config: str | None = None) -> str:
    """``id:[config:]split``: how errors name a hub dataset's split."""
    dataset_id, config, split = hub_reference(ref, split, config)
    return f"{dataset_id}:{config + ':' if config else ''}{split}"


def hub_records(ref: str, split: str | None = None, config: str | None = None) -> list[Record]:
    """Rows of a hub dataset ``ref`` (``owner/name[:config[:split]]``; see :func:`hub_reference`).

    Checked for reachability first (``geffect.sources.hub_reachable``, or a cached copy), so that
    an offline machine fails at once instead of waiting on retries.
    """
    label = hub_label(ref, split, config)
    dataset_id, config, split = hub_reference(ref, split, config)
    from geffect.sources import hub_reachable, in_hub_cache

    if not (hub_reachable() or in_hub_cache(dataset_id, "dataset")):
        raise DataError(f"{dataset_id!r} is not an existing file or folder, and the Hugging Face hub is not "
                        "reachable (offline) to load it as a dataset id")
    import datasets

    try:
        data = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as err:  # datasets raises many types (network, missing config, ...): report in one line
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"cannot load hub dataset {label}: {message}") from None
    return [(row, f"{label}, row {i + 1}") for i, row in enumerate(data)]
