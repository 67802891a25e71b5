"""The built-in tasks' generated data on disk: ``data/tasks/<task>/<split>.jsonl`` plus a manifest.

Written by ``geffect build-world`` from :data:`geffect.data.generators.GENERATORS` with the
world's seed, in the world's format (see :mod:`geffect.data.store`): byte-identical files
for the same seed, and a manifest of generator arguments, sizes and SHA-256 hashes that
loading checks.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import datasets

from geffect.data.generators import GENERATORS
from geffect.data.paths import data_root
from geffect.data.store import read_splits, write_splits


def default_tasks_dir() -> Path:
    """Where the built-in tasks' data lives: ``<data root>/tasks``."""
    return data_root() / "tasks"


def _generator(task: str):
    if task not in GENERATORS:
        raise KeyError(f"no generated data for task {task!r}; generated tasks: {', '.join(sorted(GENERATORS))}")
    return GENERATORS[task]


def generator_defaults(task: str) -> dict[str, Any]:
    """The default arguments of ``task``'s generator (recorded in its manifest)."""
    return {p.name: p.default for p in inspect.signature(_generator(task)).parameters.values()}


def write_task_data(task: str, root: str | Path | None = None, seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """Generate ``task``'s splits and write them under ``<root>/<task>`` (default: the shipped folder)."""
    arguments = {**generator_defaults(task), **kwargs, "seed": seed}
    folder = (Path(root) if root is not None else default_tasks_dir()) / task
    return write_splits(folder, _generator(task)(**arguments), arguments)


def write_all_task_data(root: str | Path | None = None, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Every generated task's data with default sizes; returns ``{task: manifest}``."""
    return {task: write_task_data(task, root, seed) for task in GENERATORS}


def load_task_data(task: str, root: str | Path | None = None) -> datasets.DatasetDict:
    """``task``'s generated splits as a ``DatasetDict``, checked against the manifest."""
    _generator(task)
    folder = (Path(root) if root is not None else default_tasks_dir()) / task
    return read_splits(folder, what=f"{task} task", rebuild="geffect build-world --world-only")
