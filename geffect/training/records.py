"""Incremental, crash-safe record tables of a run directory.

Parquet files cannot be appended to, so each table (``effects``, ``history``, ``risks``)
is a directory of part files, ``<table>.parquet/part-<first>-<last>.parquet`` (the
first step they hold and an upper bound of the last), which ``pandas.read_parquet(directory)`` reads as one
table. Each part is written under a hidden temporary name and moved into place with
``os.replace``, so a killed process leaves either a whole part or none. Resuming
from a checkpoint at step ``c`` calls :meth:`RecordWriter.truncate` to drop every row
with ``step >= c`` (deleting or rewriting parts), so the resumed run adds no gap and no
duplicate. Columns follow ``geffect.schema`` and the "Records" contract.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from geffect.errors import DamagedRunError, one_line
from geffect.schema import EFFECT_COLUMNS

TABLES = ("effects", "history", "risks")
RISK_COLUMNS = ("step", "probe", "instance", "risk", "risk_after", "predicted_change")
_PART = re.compile(r"part-(\d+)-(\d+)\.parquet")
_DTYPES = {"step": "int64", "instance": "int64", "probe": "str", "layer": "str", "direction": "str"}


def table_path(run_dir: str | Path, table: str) -> Path:
    """The part-file directory of ``table`` in ``run_dir``."""
    if table not in TABLES:
        raise ValueError(f"unknown record table {table!r}; tables are {list(TABLES)}")
    return Path(run_dir) / f"{table}.parquet"


def read_table(run_dir: str | Path, table: str) -> pd.DataFrame:
    """The rows of ``table`` written so far, sorted by step (empty frame if none)."""
    parts = _parts(table_path(run_dir, table))
    if not parts:
        return pd.DataFrame(columns=list(_expected_columns(table)))
    frame = pd.concat([read_part(path) for _, _, path in parts], ignore_index=True)
    return frame.sort_values("step", kind="stable", ignore_index=True)


def read_part(path: Path) -> pd.DataFrame:
    """One part file; a part that cannot be read raises :class:`DamagedRunError` naming it."""
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a truncated or corrupt file
        raise DamagedRunError(f"record part {str(path)!r} is damaged: {one_line(err)}") from None
    if "step" not in frame.columns:
        raise DamagedRunError(f"record part {str(path)!r} is damaged: it has no 'step' column")
    return frame


def verify_records(run_dir: str | Path, before: int, recorded: set[int]) -> None:
    """Check the rows a resume keeps (steps < ``before``): every part readable, one history row
    per step ``0..before-1``, effects and risks rows exactly for the ``recorded`` steps.

    Raises :class:`DamagedRunError` naming the part or table; such rows cannot be recomputed
    (the run keeps only its newest checkpoint), so the run must start again.
    """
    for table in TABLES:
        folder = table_path(run_dir, table)
        steps = []
        for first, last, path in _parts(folder):
            if first >= before:
                continue  # dropped and recomputed by the resume
            frame = read_part(path)
            outside = frame.loc[(frame["step"] < first) | (frame["step"] > last), "step"]
            if len(outside):
                raise DamagedRunError(f"record part {str(path)!r} is damaged: it holds step {int(outside.iloc[0])}, "
                                      f"outside the steps {first}..{last} its name promises")
            steps.append(frame.loc[frame["step"] < before, "step"])
        found = pd.concat(steps) if steps else pd.Series([], dtype="int64")
        if table == "history":
            wanted, got = list(range(before)), sorted(found.tolist())
        else:
            wanted, got = sorted(s for s in recorded if s < before), sorted(set(found.tolist()))
        if got != wanted:
            missing = sorted(set(wanted) - set(got))
            what = f"steps {missing[:5]} are missing" if missing else "some steps are duplicated or unexpected"
            raise DamagedRunError(f"record table {str(folder)!r} is damaged: {what} before step {before}")


def _expected_columns(table: str) -> tuple[str, ...]:
    return {"effects": EFFECT_COLUMNS, "risks": RISK_COLUMNS, "history": ("step",)}[table]


def _parts(folder: Path) -> list[tuple[int, int, Path]]:
    """(first step, last step, path) of the complete part files in ``folder``, by first step."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _PART.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), int(match.group(2)), path))
    return sorted(found)


def write_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as parquet at ``path`` via a hidden temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


class RecordWriter:
    """Buffers rows per table and writes them as atomic part files on :meth:`flush`."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._buffers: dict[str, list[pd.DataFrame]] = {table: [] for table in TABLES}

    def add(self, table: str, rows: pd.DataFrame) -> None:
        """Queue ``rows`` (with a ``step`` column) for ``table``."""
        table_path(self.run_dir, table)  # validates the name
        if "step" not in rows.columns:
            raise ValueError(f"rows for record table {table!r} need a 'step' column; got {list(rows.columns)}")
        if len(rows):
            self._buffers[table].append(rows)

    @property
    def pending(self) -> int:
        """Number of buffered rows not yet on disk."""
        return sum(len(frame) for frames in self._buffers.values() for frame in frames)

    def flush(self) -> None:
        """Write each table's buffered rows as one new part file."""
        for table, frames in self._buffers.items():
            if not frames:
                continue
            frame = pd.concat(frames, ignore_index=True)
            frame = frame.astype({c: t for c, t in _DTYPES.items() if c in frame.columns})
            first, last = int(frame["step"].min()), int(frame["step"].max())
            folder = table_path(self.run_dir, table)
            path = folder / f"part-{first:08d}-{last:08d}.parquet"
            if path.exists():
                raise FileExistsError(
                    f"record part {str(path)!r} already exists: rows of steps {first}..{last} were "
                    "written twice (a resume must truncate the records first)"
                )
            write_atomic(frame, path)
            frames.clear()

    def truncate(self, step: int) -> None:
        """Drop every record with ``step >= step`` on disk and in the buffer (resume from ``step``)."""
        for table in TABLES:
            self._buffers[table] = [f[f["step"] < step] for f in self._buffers[table]]
            for first, last, path in _parts(table_path(self.run_dir, table)):
                if first >= step:
                    path.unlink()
                elif last >= step:
                    # Rewritten in place (atomic), so a crash here leaves no duplicate part;
                    # the name's last step is then an upper bound, which is all truncation needs.
                    kept = read_part(path)
                    write_atomic(kept[kept["step"] < step], path)
            for stale in table_path(self.run_dir, table).glob(".*.tmp"):
                stale.unlink()
