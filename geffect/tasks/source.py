"""``TaskData``: the splits one run or evaluation uses, resolved through its task, read and checked once.

It also keeps a seeded fraction of the run's forget and retain rows out of training
(``holdout``; row choice seeded by the run seed and the role, see
:func:`geffect.data.sampling.holdout_indices`), which the default evaluation scores, and gives
the pools the forget views draw replacement targets from.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from geffect.data.files import DATA_SUFFIXES, DataError, is_data_file, looks_like_hub_id
from geffect.data.loader import load_rows
from geffect.data.rows import row_kind
from geffect.data.sampling import holdout_indices
from geffect.tasks.task import Task

Row = dict[str, Any]


class UnknownSplit(DataError):
    """A split name that the task cannot resolve (a reader raises it so a hub id can still be tried)."""


class TaskData:
    """Named splits of ``task`` (a :class:`Task` or a registered name) with ``data`` overriding its source.

    ``heldout``: split name → role (``"forget"`` / ``"retain"``) for the splits whose rows are
    partly held out, ``holdout`` the fraction, ``seed`` the run seed.
    """

    def __init__(self, task: Task | str = "tofu", data: str | None = None, *, holdout: float = 0.0, seed: int = 0,
                 heldout: Mapping[str, str] | None = None) -> None:
        from geffect.tasks.registry import get_task

        self.task = get_task(task) if isinstance(task, str) else task
        self.data, self.holdout, self.seed = data, holdout, seed
        self.heldout_roles = dict(heldout or {}) if holdout > 0 else {}
        self._splits: dict[str, Any] = {}

    # -- resolution -------------------------------------------------------------------------------------

    def split(self, name: str):
        """All checked rows of split ``name`` (a ``datasets.Dataset``), read once."""
        if name not in self._splits:
            self._splits[name] = self._load(name)
        return self._splits[name]

    def _load(self, name: str):
        task = self.task
        if name in task.splits:
            value = task.splits[name]
            if isinstance(value, (str, Path)):
                return load_rows(self._relative(value))
            return load_rows(value, label=f"task {task.name!r}, split {name!r}")
        if is_data_file(name) or Path(name).expanduser().is_file():
            return load_rows(name)
        try:
            if task.reader is not None:
                return task.reader(name, self.data)
            return self._from_folder(name)
        except UnknownSplit:
            if looks_like_hub_id(name):
                return load_rows(name)
            raise

    def _relative(self, value: str | Path) -> Path:
        """A task's split file: absolute, or relative to the task's data folder when it exists there."""
        path = Path(value).expanduser()
        if not path.is_absolute() and not path.exists() and (self.task.data_folder(self.data) / path).exists():
            return self.task.data_folder(self.data) / path
        return path

    def _from_folder(self, name: str):
        folder = self.task.data_folder(self.data)
        chosen = self.data if self.data is not None else self.task.data
        if chosen is not None and not folder.is_dir():
            if looks_like_hub_id(str(chosen)):  # a hub dataset whose splits carry the task's split names
                return load_rows(str(chosen), name)
            raise DataError(f"{chosen}: no such data folder (task {self.task.name!r} reads its split {name!r} there)")
        known = self.known_splits()
        if name not in known or not folder.is_dir():
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            listed = f"; its splits: {', '.join(known)}" if known else ""
            raise UnknownSplit(f"task {self.task.name!r} has no split {name!r}{hint}{listed}; give a split name or "
                               f"a data file ({', '.join(DATA_SUFFIXES)}) or hub id")
        return load_rows(folder, name)

    def known_splits(self) -> list[str]:
        """Split names the task's folder and ``splits`` offer (a reader's own splits are not listed)."""
        folder = self.task.data_folder(self.data)
        files = {p.stem for p in folder.iterdir() if p.suffix in DATA_SUFFIXES} if folder.is_dir() else set()
        return sorted(files | set(self.task.splits))

    # -- rows for training and evaluation ---------------------------------------------------------------

    def kind(self, name: str) -> str:
        """The row kind of split ``name``."""
        return row_kind(self.split(name).column_names)

    def heldout_ids(self, name: str) -> list[int]:
        """Row numbers of ``name`` kept out of training (empty unless it is a held-out forget/retain split)."""
        role = self.heldout_roles.get(name)
        return [] if role is None else holdout_indices(len(self.split(name)), self.holdout, self.seed, role)

    def rows(self, name: str) -> tuple[list[Row], list[int]]:
        """(rows, their row numbers in the split) that training and probes may use: all but the held-out ones."""
        data = self.split(name)
        held = set(self.heldout_ids(name))
        ids = [i for i in range(len(data)) if i not in held]
        if not ids:
            raise DataError(f"split {name!r} has no rows left for training")
        return list(data.select(ids) if held else data), ids

    def heldout_rows(self, name: str) -> tuple[list[Row], list[int]]:
        """(rows, row numbers) of ``name`` kept out of training."""
        ids = self.heldout_ids(name)
        return list(self.split(name).select(ids)), ids

    def heldout_record(self) -> dict[str, Any]:
        """What was held out, for the run directory's ``heldout.json``."""
        return {"fraction": self.holdout, "seed": self.seed,
                **{role: {"split": name, "rows": len(self.split(name)), "heldout": self.heldout_ids(name)}
                   for name, role in self.heldout_roles.items()}}

    def pool(self, view: str, fallback: list[str] | None = None) -> list[str]:
        """Replacement targets a forget view draws from: the targets of the task's pool split for ``view``.

        Without one: the ``idk`` split for the ``idk`` view (the world's refusals when the task has
        none), else ``fallback``.
        """
        name = self.task.pools.get(view, "idk" if view == "idk" else None)
        if name is None:
            return list(fallback or [])
        try:
            data = self.split(name)
        except UnknownSplit:
            if view != "idk" or view in self.task.pools:
                raise
            from geffect.data.refusals import REFUSALS

            return list(REFUSALS)
        column = next((f for f in ("answer", "response", "text") if f in data.column_names), None)
        if column is None:
            raise DataError(f"pool split {name!r} of the {view!r} view has no answer, response or text column")
        return list(data[column])
