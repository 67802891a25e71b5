"""One loader with one validation for every way rows come in: embedded splits, ``--data DIR``,
a user's files, files a task or probe names, hub datasets and rows given in memory.

:func:`load_rows` reads the records (:mod:`geffect.data.files`), checks each against its row
kind (:mod:`geffect.data.rows`) or an explicit schema, and returns a ``datasets.Dataset``. Every
problem is a :class:`~geffect.data.files.DataError` of one line naming the file, the row and
the field (a missing ``answer``, an integer answer, a bad JSON line, an empty file or split,
columns of no known row kind), raised before anything expensive happens. A folder of splits
may carry a ``manifest.json`` (see :func:`write_splits`); its hashes are then verified.
Multiple-choice evaluation rows (``question``, ``choices``, integer ``label``) are recognised by
their ``choices`` column and checked against :data:`MULTIPLE_CHOICE`.
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from geffect.data.files import (
    DATA_SUFFIXES,
    DataError,
    Record,
    hub_label,
    hub_records,
    is_data_file,
    looks_like_hub_id,
    read_records,
)
from geffect.data.rows import ROW_KINDS, RowKindError, row_kind, source_field, target_field

MANIFEST = "manifest.json"
Schema = Mapping[str, Any]  # field -> str, int, float, bool or list[str]
# multiple-choice evaluation rows (lm-eval style): recognised by their ``choices`` column
MULTIPLE_CHOICE: dict[str, Any] = {"question": str, "choices": list[str], "label": int}


def kind_schema(kind: str) -> dict[str, Any]:
    """The required fields of a row kind (all strings)."""
    return {field: str for field in ROW_KINDS[kind]}


def optional_schema(kind: str) -> dict[str, Any]:
    """Optional fields of ``kind`` whose type is checked when present (used by the forget views)."""
    target, source = target_field(kind), source_field(kind)
    optional: dict[str, Any] = {f"paraphrased_{target}": str, f"perturbed_{target}": list[str]}
    if source is not None:
        optional[f"paraphrased_{source}"] = str
    return optional


def _type_name(kind: Any) -> str:
    return "a list of strings" if typing.get_origin(kind) is list else {str: "a string", int: "an integer",
                                                                           float: "a number", bool: "true/false"}[kind]


def _check_value(value: Any, kind: Any, where: str, field: str, required: bool) -> Any:
    """``value`` checked against ``kind`` (a lone string stands for a one-item list of strings)."""
    if typing.get_origin(kind) is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise DataError(f"{where}: field {field!r} must be {_type_name(kind)}, got {_describe(value)}")
        return list(value)
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise DataError(f"{where}: field {field!r} must be {_type_name(kind)}, got {_describe(value)}")
    if kind is str and required and not value.strip():
        raise DataError(f"{where}: field {field!r} is empty")
    return value


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def check_row(record: Any, where: str, schema: Schema, optional: Schema | None = None) -> dict[str, Any]:
    """``record`` as a dict whose ``schema`` fields are present and typed (``optional`` ones typed if present).

    Required strings must be non-empty. Raises :class:`DataError` naming ``where`` and the field.
    """
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: expected an object with field(s) {', '.join(schema)}, got {_describe(record)}")
    row = dict(record)
    for field, kind in schema.items():
        if row.get(field) is None:
            raise DataError(f"{where}: missing field {field!r} (the row has {sorted(k for k, v in row.items() if v is not None)})")
        row[field] = _check_value(row[field], kind, where, field, required=True)
    for field, kind in (optional or {}).items():
        if row.get(field) is not None:
            row[field] = _check_value(row[field], kind, where, field, required=False)
    return row


def check_records(records: list[Record], label: str, schema: Schema | None = None,
                  kind: str | None = None) -> tuple[str | None, list[dict]]:
    """(row kind, checked rows) of ``records`` read from ``label``.

    ``schema`` (field -> type) checks rows of another shape (the kind is then None); else the
    row ``kind`` is given or found from the fields the records use (see
    :func:`geffect.data.rows.row_kind`), and every row is checked against it.
    """
    if not records:
        raise DataError(f"{label}: empty (no rows)")
    optional: Schema = {}
    odd = next(((record, where) for record, where in records if not isinstance(record, Mapping)), None)
    if odd is not None:
        raise DataError(f"{odd[1]}: expected an object with named fields, got {_describe(odd[0])}")
    fields = {key for record, _ in records for key in record}
    if schema is None and kind is None and "choices" in fields:
        schema = MULTIPLE_CHOICE  # evaluation-only rows, no row kind
    if schema is None:
        if kind is None:
            try:
                kind = row_kind(fields)
            except RowKindError as err:
                raise DataError(f"{label}: {err}") from None
        schema, optional = kind_schema(kind), optional_schema(kind)
    return kind, [check_row(record, where, schema, optional) for record, where in records]


def to_dataset(rows: list[dict[str, Any]], label: str, features: Any = None):
    """A ``datasets.Dataset`` of checked ``rows`` (columns: every field any row has, in first-seen order)."""
    import datasets
    import pyarrow as pa

    if features is not None:
        return datasets.Dataset.from_list(rows, features=features)
    names = list(dict.fromkeys(key for row in rows for key in row))
    columns = {name: [row.get(name) for row in rows] for name in names}
    try:
        return datasets.Dataset.from_dict(columns)
    except (pa.ArrowException, TypeError, ValueError):
        for name, values in columns.items():  # find the column arrow cannot type
            try:
                pa.array(values)
            except (pa.ArrowException, TypeError, ValueError):
                kinds = sorted({type(v).__name__ for v in values if v is not None})
                raise DataError(f"{label}: column {name!r} mixes value types ({', '.join(kinds)})") from None
        raise


# -- where records come from --------------------------------------------------------------------------


def folder_split_file(folder: str | Path, split: str) -> Path:
    """The file holding ``split`` in ``folder`` (``<split>`` + one of the data suffixes)."""
    folder = Path(folder).expanduser()
    for suffix in DATA_SUFFIXES:
        path = folder / f"{split}{suffix}"
        if path.is_file():
            return path
    found = sorted({p.stem for p in folder.iterdir() if p.suffix in DATA_SUFFIXES}) if folder.is_dir() else []
    if not folder.is_dir():
        raise DataError(f"{folder}: no such data folder (looking for split {split!r})")
    raise DataError(f"{folder}: no split {split!r} (found: {', '.join(found) or 'no data files'})")


def verify_manifest(path: Path, rows: int | None = None) -> None:
    """Check ``path`` against its folder's ``manifest.json`` (when there is one and it lists the file)."""
    manifest_path = path.parent / MANIFEST
    if not manifest_path.is_file():
        return
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        digest, size = manifest["sha256"].get(path.stem), manifest["sizes"].get(path.stem)
    except (json.JSONDecodeError, KeyError, AttributeError, UnicodeDecodeError) as err:
        raise DataError(f"{manifest_path}: not a readable manifest ({type(err).__name__})") from None
    if digest is None:
        return
    if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
        raise DataError(f"{path} does not match its manifest hash; regenerate it with `geffect build-world`")
    if rows is not None and size is not None and rows != size:
        raise DataError(f"{path} has {rows} rows, its manifest says {size}")


def _records(source: Any, split: str | None) -> tuple[list[Record], str, Path | None]:
    """(records, label, file) of ``source`` (see :func:`load_rows`)."""
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if path.is_dir():
            if split is None:
                raise DataError(f"{path} is a folder: name the split to read from it")
            file = folder_split_file(path, split)
            return read_records(file), str(file), file
        if path.is_file() or is_data_file(path):
            return read_records(path), str(path), path
        if isinstance(source, str) and looks_like_hub_id(source):
            return hub_records(source, split), hub_label(source, split), None
        raise DataError(f"{source}: no such file or folder (data files end in {', '.join(DATA_SUFFIXES)})")
    label = split or "rows"
    if isinstance(source, Mapping):  # columns
        names = list(source)
        n = len(source[names[0]]) if names else 0
        rows = [{k: source[k][i] for k in names} for i in range(n)]
    elif isinstance(source, Iterable):  # a list of rows or a datasets.Dataset
        rows = list(source)
    else:
        raise DataError(f"cannot read rows from a {type(source).__name__}: give a file, a folder and split, "
                        "a hub id, a list of rows or a datasets.Dataset")
    return [(row, f"{label}, row {i + 1}") for i, row in enumerate(rows)], label, None


def load_rows(source: Any, split: str | None = None, *, schema: Schema | None = None,
              features: Any = None, label: str | None = None):
    """Checked rows of ``source`` as a ``datasets.Dataset``.

    ``source``: a data file (``.jsonl``, ``.json``, ``.csv``, ``.parquet``), a folder holding
    ``<split>.<suffix>``, a hub dataset ``owner/name[:config[:split]]`` (split ``train`` by default;
    tried only when it is no existing path; never waits when offline), a list of row dicts, a dict
    of columns or a ``datasets.Dataset``. Rows must hold one row kind (``question``/``answer``,
    ``prompt``/``response`` or ``text``) unless ``schema`` (field -> type) says otherwise.
    ``label`` names in-memory rows in errors.
    """
    records, where, file = _records(source, split)
    if label is not None and file is None:
        records = [(record, f"{label}{place[place.find(','):]}") for record, place in records]
        where = label
    _, rows = check_records(records, where, schema)
    if file is not None:
        verify_manifest(file, len(rows))
    return to_dataset(rows, where, features)


# -- writing a folder of splits -----------------------------------------------------------------------


def jsonl_bytes(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """Rows as JSON lines: keys in the given order, ASCII-escaped, ``\\n`` line ends (byte-stable)."""
    return "".join(json.dumps(dict(row), ensure_ascii=True) + "\n" for row in rows).encode("ascii")


def write_splits(folder: str | Path, splits: Mapping[str, list[Mapping[str, Any]]], generator: Mapping[str, Any],
                 format_version: int = 1) -> dict[str, Any]:
    """Write each split as ``<folder>/<split>.jsonl`` and a ``manifest.json`` of sizes and SHA-256 hashes.

    ``generator`` records the arguments that produced the splits. The manifest lets
    :func:`load_rows` detect a changed or partial folder. Returns the manifest.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    overall = hashlib.sha256()
    for name, rows in splits.items():
        payload = jsonl_bytes(rows)
        (out / f"{name}.jsonl").write_bytes(payload)
        files[name] = hashlib.sha256(payload).hexdigest()
        overall.update(name.encode() + b"\0" + payload)
    manifest = {
        "format_version": format_version,
        "generator": dict(generator),
        "sizes": {name: len(rows) for name, rows in splits.items()},
        "sha256": files,
        "content_hash": overall.hexdigest(),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="ascii")
    return manifest
