"""Uniform access to what the reporting layer draws from: the record tables of one run.

Plots, the diagnosis and the HTML report accept a run in any of the forms a user has at
hand: a run directory written by the trainer, a ``geffect.Run`` object, or the bare long
tables. :func:`as_run` turns each into a :class:`RunData` (name, effects / history / risks
tables, config, metrics, probe texts), and :func:`as_runs` does the same for a list or a
``{name: run}`` mapping, so every consumer reads the same columns (see ``geffect.schema``)
and reports a missing table or column with the source it came from.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from geffect.errors import DamagedRunError, one_line
from geffect.schema import EFFECT_COLUMNS

RISK_COLUMNS = ("step", "probe", "instance", "risk", "risk_after", "predicted_change")
TEXT_COLUMNS = ("question", "answer", "prompt", "response", "text")

# Files of a run directory, as the trainer writes them (parquet tables may be part-file dirs).
EFFECTS_FILE = "effects.parquet"
HISTORY_FILE = "history.parquet"
RISKS_FILE = "risks.parquet"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
STATUS_FILE = "run.json"
PROBES_DIR = "probes"  # optional: probes/<probe>.jsonl or .parquet with the probe instances' text


@dataclass(eq=False)
class RunData:
    """One run's record tables and metadata, normalised for reporting (compared by identity)."""

    name: str
    effects: pd.DataFrame
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    risks: pd.DataFrame = field(default_factory=pd.DataFrame)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    texts: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def objective(self) -> str:
        """The objective's name from the config, else the run's name."""
        return objective_name(self.config.get("objective")) or self.name

    def probes(self) -> list[str]:
        """Probe-set names present in the effects table, in first-seen order."""
        return list(pd.unique(self.effects["probe"])) if len(self.effects) else []


def objective_name(value: Any) -> str | None:
    """A readable name for an objective given as a registry name, a callable, or a mapping."""
    if value is None:
        return None
    if isinstance(value, str):  # "package.module:function" names a user's function
        return value.rpartition(":")[2] or value
    if isinstance(value, Mapping):
        return objective_name(value.get("name"))
    return getattr(value, "__name__", None) or str(value)


def check_columns(frame: pd.DataFrame, required: Iterable[str], what: str) -> pd.DataFrame:
    """Return ``frame`` if it has every ``required`` column, else raise naming the missing ones."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} lacks column(s) {missing}; it has {list(frame.columns)} "
            f"(expected the record format of common.md / geffect.schema)"
        )
    return frame


def _damaged(path: Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)``; any failure to read becomes a :class:`DamagedRunError` naming the file."""
    try:
        return read(path)
    except Exception as err:  # pyarrow, yaml and json raise many types for truncated or corrupt files
        raise DamagedRunError(f"{str(path)!r} is damaged: {one_line(err)}") from None


def _read_parquet(path: Path) -> pd.DataFrame:
    """Read a parquet file or a directory of part files (hidden and temporary files skipped;
    parts may differ in columns, e.g. history loss parts), sorted by step; absent → empty."""
    if path.is_file():
        return _damaged(path, pd.read_parquet)
    parts = sorted(p for p in path.glob("*.parquet") if not p.name.startswith((".", "_"))) \
        if path.is_dir() else []
    if not parts:
        return pd.DataFrame()
    frame = pd.concat([_damaged(p, pd.read_parquet) for p in parts], ignore_index=True)
    return frame.sort_values("step", kind="stable", ignore_index=True) if "step" in frame else frame


def _read_texts(folder: Path) -> dict[str, pd.DataFrame]:
    """Probe texts saved beside a run: ``probes/<probe>.jsonl`` or ``.parquet`` (row i = instance i)."""
    texts: dict[str, pd.DataFrame] = {}
    if not folder.is_dir():
        return texts
    for file in sorted(folder.iterdir()):
        if file.suffix == ".jsonl":
            frame = _damaged(file, lambda f: pd.read_json(f, lines=True))
        elif file.suffix == ".parquet":
            frame = _damaged(file, pd.read_parquet)
        else:
            continue
        texts[file.stem] = normalise_texts(frame, f"{file}")
    return texts


def normalise_texts(source: Any, what: str = "texts") -> pd.DataFrame:
    """Turn probe texts (list of strings, or a table with question/answer, prompt/response or text
    columns) into a DataFrame indexed by instance with a ``text`` column (and the others if given)."""
    if isinstance(source, pd.DataFrame):
        frame = source.copy()
    elif isinstance(source, Mapping):
        frame = pd.DataFrame(source)
    else:
        frame = pd.DataFrame({"text": [str(t) for t in source]})
    if "instance" in frame.columns:
        frame = frame.set_index("instance")
    if "text" not in frame.columns:
        source = next((c for c in ("question", "prompt") if c in frame.columns), None)
        if source is None:
            raise ValueError(f"{what} needs a 'text', 'question' or 'prompt' column; it has {list(frame.columns)}")
        target = {"question": "answer", "prompt": "response"}[source]
        answer = frame[target].astype(str) if target in frame.columns else ""
        frame["text"] = frame[source].astype(str) + " → " + answer
    frame.index = frame.index.astype(int)
    frame.index.name = "instance"
    return frame[[c for c in TEXT_COLUMNS if c in frame.columns]]


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    return dict(vars(config))


def load_run_dir(path: str | Path, name: str | None = None) -> RunData:
    """Read a trainer run directory (effects/history/risks parquet, config.yaml, metrics.json)."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"run directory {str(folder)!r} does not exist")
    effects = _read_parquet(folder / EFFECTS_FILE)
    if effects.empty:
        raise ValueError(
            f"{str(folder)!r} has no {EFFECTS_FILE} records: is it a geffect run directory "
            "(written by geffect.unlearn / `geffect unlearn`) with at least one recorded step?"
        )
    config = _read_mapping(folder / CONFIG_FILE, yaml.safe_load)
    metrics = _read_mapping(folder / METRICS_FILE, json.loads)
    status = _read_mapping(folder / STATUS_FILE, json.loads)
    if "status" in status:
        config = {**config, "status": status["status"]}
    return _finish(
        RunData(
            name=name or objective_name(config.get("objective")) or folder.name,
            effects=effects,
            history=_read_parquet(folder / HISTORY_FILE),
            risks=_read_parquet(folder / RISKS_FILE),
            config=config,
            metrics=metrics,
            path=folder,
            texts=_read_texts(folder / PROBES_DIR),
        ),
        str(folder),
    )


def _read_mapping(path: Path, parse: Callable[[str], Any]) -> dict[str, Any]:
    """The mapping stored in a small text file (``{}`` if absent); DamagedRunError if it is not one."""
    if not path.exists():
        return {}
    value = _damaged(path, lambda p: parse(p.read_text()) or {})
    if not isinstance(value, Mapping):
        raise DamagedRunError(f"{str(path)!r} is damaged: it holds a {type(value).__name__}, not a mapping")
    return dict(value)


def _finish(run: RunData, what: str) -> RunData:
    check_columns(run.effects, EFFECT_COLUMNS, f"effects table of {what}")
    if not run.risks.empty:
        check_columns(run.risks, RISK_COLUMNS, f"risks table of {what}")
    if not run.history.empty:
        check_columns(run.history, ("step",), f"history table of {what}")
    return run


def as_run(run: Any, name: str | None = None) -> RunData:
    """Normalise a run given as a directory path, a ``geffect.Run``-like object, a
    :class:`RunData`, or a bare effects DataFrame."""
    if isinstance(run, RunData):
        return dataclasses.replace(run, name=name) if name else run
    if isinstance(run, (str, Path)):
        return load_run_dir(run, name)
    if isinstance(run, pd.DataFrame):
        return _finish(RunData(name=name or "run", effects=run), "the given effects DataFrame")
    if hasattr(run, "effects"):
        config = _config_dict(getattr(run, "config", None))
        path = getattr(run, "path", None) or getattr(run, "directory", None)
        path = Path(path) if path is not None else None
        metrics = getattr(run, "metrics", None)
        if not isinstance(metrics, Mapping):
            metrics = {}
        status = getattr(run, "status", None)
        if isinstance(status, str):
            config["status"] = status
        texts = _read_texts(path / PROBES_DIR) if path is not None else {}
        frames = {key: getattr(run, key, None) for key in ("history", "risks")}
        return _finish(
            RunData(
                name=name or objective_name(config.get("objective")) or (path.name if path else "run"),
                effects=run.effects,
                history=frames["history"] if frames["history"] is not None else pd.DataFrame(),
                risks=frames["risks"] if frames["risks"] is not None else pd.DataFrame(),
                config=config,
                metrics=dict(metrics),
                path=path,
                texts=texts,
            ),
            f"run {name or path or type(run).__name__}",
        )
    raise TypeError(
        f"cannot read a run from {type(run).__name__}: give a run directory, a geffect.Run, "
        "a RunData or an effects DataFrame"
    )


def as_runs(runs: Any) -> list[RunData]:
    """Normalise one run, a list of runs, or a ``{name: run}`` mapping. Names are made unique:
    runs sharing a name (e.g. the same objective) are named by their directory when they have
    one, else numbered (``npo #2``)."""
    if isinstance(runs, Mapping):
        items = [as_run(run, str(name)) for name, run in runs.items()]
    elif isinstance(runs, (list, tuple)):
        items = [as_run(run) for run in runs]
    else:
        items = [as_run(runs)]
    if not items:
        raise ValueError("no runs given")
    if not isinstance(runs, Mapping):
        counts = Counter(run.name for run in items)
        items = [dataclasses.replace(run, name=run.path.name) if counts[run.name] > 1 and run.path else run
                 for run in items]
    seen: Counter[str] = Counter()
    unique = []
    for run in items:
        seen[run.name] += 1
        unique.append(run if seen[run.name] == 1 else dataclasses.replace(run, name=f"{run.name} #{seen[run.name]}"))
    return unique
