"""The run directory's small files: ``run.json`` (status), ``metrics.json`` and probe texts.

``run.json`` says where a run stands: ``status`` is ``running`` while the trainer works
(and stays so if the process is killed), ``finished``, ``failed`` (an exception; its
message is kept) or ``diverged`` (a non-finite loss or gradient; the message names the
step and the part). JSON files are written to a temporary name and moved into place.
``probes/<probe>.jsonl`` holds each probe instance's text (``instance`` = row of its split)
so reports can show which questions were damaged; ``heldout.json`` lists the rows a run kept
out of training for evaluation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from geffect.errors import DamagedRunError, one_line

STATUS_FILE = "run.json"
METRICS_FILE = "metrics.json"
HELDOUT_FILE = "heldout.json"  # the rows kept out of training for evaluation (runs with a holdout)
PROBES_DIR = "probes"
STATUSES = ("running", "finished", "failed", "diverged")


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON at ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object at ``path``, or ``{}`` if the file does not exist; DamagedRunError if unreadable."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedRunError(f"{str(path)!r} is damaged: {one_line(err)}") from None
    if not isinstance(value, dict):
        raise DamagedRunError(f"{str(path)!r} is damaged: it holds a {type(value).__name__}, not a JSON object")
    return value


def write_status(run_dir: Path, status: str, **fields: Any) -> None:
    """Update ``run.json`` with ``status`` and ``fields`` (keeping earlier fields)."""
    if status not in STATUSES:
        raise ValueError(f"unknown run status {status!r}; statuses are {list(STATUSES)}")
    current = read_json(run_dir / STATUS_FILE)
    write_json(run_dir / STATUS_FILE, {**current, "status": status, **fields})


def write_probe_texts(run_dir: Path, name: str, indices: list[int], rows: list[dict[str, Any]]) -> None:
    """``probes/<name>.jsonl``: instance id and the row-kind fields (question/answer, prompt/response or
    text) of each probe instance."""
    from geffect.data.rows import ROW_KINDS, row_kind

    folder = run_dir / PROBES_DIR
    folder.mkdir(exist_ok=True)
    lines = [json.dumps({"instance": i, **{f: row[f] for f in ROW_KINDS[row_kind(row.keys())]}})
             for i, row in zip(indices, rows)]
    tmp = folder / f".{name}.jsonl.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, folder / f"{name}.jsonl")
