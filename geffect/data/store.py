"""Write the world as JSON lines and read it back as a ``datasets.DatasetDict``.

Each split becomes ``<split>.jsonl`` (one JSON object per line, keys in schema
order, ASCII-escaped, ``\\n`` line ends) so the files are readable by anyone and
byte-identical for the same seed. ``manifest.json`` records the generator
arguments, the row count of each split and a SHA-256 of every file plus one over
all of them, so a changed or partial world is detected on load (the writing and the
checks are :func:`geffect.data.write_splits` and :func:`geffect.data.load_rows`, shared
with the tasks' data).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets

from geffect.data.loader import MANIFEST, load_rows, write_splits
from geffect.data.paths import data_root
from geffect.data.world import generate_world

QA_COLUMNS = ("question", "answer", "paraphrased_question", "paraphrased_answer", "perturbed_answer", "author")
QA_FEATURES = datasets.Features({
    "question": datasets.Value("string"),
    "answer": datasets.Value("string"),
    "paraphrased_question": datasets.Value("string"),
    "paraphrased_answer": datasets.Value("string"),
    "perturbed_answer": datasets.List(datasets.Value("string")),
    "author": datasets.Value("int64"),
})
IDK_FEATURES = datasets.Features({"answer": datasets.Value("string")})
IDK_SCHEMA = {"answer": str}
FORMAT_VERSION = 1

__all__ = ["IDK_FEATURES", "QA_COLUMNS", "QA_FEATURES", "load_world", "load_world_split", "read_manifest",
           "read_splits", "write_splits", "write_world"]


def world_defaults() -> dict[str, Any]:
    """The default arguments of :func:`generate_world` (recorded in every manifest)."""
    parameters = inspect.signature(generate_world).parameters.values()
    return {p.name: p.default for p in parameters}


def default_world_dir() -> Path:
    """The shipped world: ``<data root>/world``."""
    return data_root() / "world"


def write_world(out_dir: str | Path | None = None, seed: int = 0, **generate_kwargs: int) -> dict[str, Any]:
    """Generate the world (see :func:`generate_world`) and write it under ``out_dir``.

    Defaults to the shipped location. Returns the manifest that was written.
    """
    out = Path(out_dir) if out_dir is not None else default_world_dir()
    arguments = {**world_defaults(), **generate_kwargs, "seed": seed}
    return write_splits(out, generate_world(**arguments), arguments, FORMAT_VERSION)


def read_manifest(root: str | Path | None = None, what: str = "world",
                  rebuild: str = "geffect build-world") -> dict[str, Any]:
    """The manifest of the splits stored in ``root`` (default: the shipped world)."""
    path = (Path(root) if root is not None else default_world_dir()) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {what} manifest at {path}; run `{rebuild}` to create it")
    return json.loads(path.read_text(encoding="ascii"))


def _world_split(folder: Path, name: str) -> datasets.Dataset:
    if name == "idk":
        return load_rows(folder, name, schema=IDK_SCHEMA, features=IDK_FEATURES)
    return load_rows(folder, name, features=QA_FEATURES)


def read_splits(folder: str | Path, read: Callable[[Path, str], datasets.Dataset] | None = None,
                what: str = "world", rebuild: str = "geffect build-world") -> datasets.DatasetDict:
    """Every split listed in ``folder``'s manifest, read and checked by :func:`geffect.data.load_rows`.

    ``read(folder, name)`` reads one split (default: ``load_rows`` with the row kind found from the
    rows); ``what`` and ``rebuild`` word the errors.
    """
    folder = Path(folder)
    read = read or (lambda where, name: load_rows(where, name))
    out = {}
    for name in read_manifest(folder, what, rebuild)["sizes"]:
        if not (folder / f"{name}.jsonl").is_file():
            raise FileNotFoundError(f"{what} split {name!r} is missing: {folder / f'{name}.jsonl'}")
        out[name] = read(folder, name)
    return datasets.DatasetDict(out)


def load_world_split(name: str, root: str | Path | None = None) -> datasets.Dataset:
    """One split of the embedded world (default: the shipped ``data/world``), checked against the manifest."""
    folder = Path(root) if root is not None else default_world_dir()
    sizes = read_manifest(folder)["sizes"]
    if name not in sizes:
        raise KeyError(f"the embedded world has no split {name!r}; its splits are {sorted(sizes)}")
    if not (folder / f"{name}.jsonl").is_file():
        raise FileNotFoundError(f"world split {name!r} is missing: {folder / f'{name}.jsonl'}")
    return _world_split(folder, name)


def load_world(root: str | Path | None = None) -> datasets.DatasetDict:
    """The embedded world as a ``DatasetDict`` (default: the shipped ``data/world``).

    Splits and columns follow the TOFU schema (see :func:`generate_world`); ``idk`` has the
    single column ``answer``. Rows are read and checked by :func:`geffect.data.load_rows`,
    files against the manifest.
    """
    return read_splits(Path(root) if root is not None else default_world_dir(), _world_split)
