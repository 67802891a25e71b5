"""Write the world as JSON lines and read it back as a ``datasets.DatasetDict``.

Each split becomes ``<split>.jsonl`` (one JSON object per line, keys in schema
order, ASCII-escaped, ``\\n`` line ends) so the files are readable by anyone and
byte-identical for the same seed. ``manifest.json`` records the generator
arguments, the row count of each split and a SHA-256 of every file plus one over
all of them, so a changed or partial world is detected on load.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets

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
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def world_defaults() -> dict[str, Any]:
    """The default arguments of :func:`generate_world` (recorded in every manifest)."""
    parameters = inspect.signature(generate_world).parameters.values()
    return {p.name: p.default for p in parameters}


def default_world_dir() -> Path:
    """The shipped world: ``<data root>/world``."""
    return data_root() / "world"


def _jsonl_bytes(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=True) + "\n" for row in rows).encode("ascii")


def write_splits(out: Path, splits: dict[str, list[dict[str, Any]]], generator: dict[str, Any]) -> dict[str, Any]:
    """Write ``splits`` as ``<split>.jsonl`` files and their manifest into ``out``; returns the manifest.

    ``generator`` (the arguments that produced the splits) is recorded in the manifest.
    """
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    overall = hashlib.sha256()
    for name, rows in splits.items():
        payload = _jsonl_bytes(rows)
        (out / f"{name}.jsonl").write_bytes(payload)
        files[name] = hashlib.sha256(payload).hexdigest()
        overall.update(name.encode() + b"\0" + payload)
    manifest = {
        "format_version": FORMAT_VERSION,
        "generator": generator,
        "sizes": {name: len(rows) for name, rows in splits.items()},
        "sha256": files,
        "content_hash": overall.hexdigest(),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="ascii")
    return manifest


def write_world(out_dir: str | Path | None = None, seed: int = 0, **generate_kwargs: int) -> dict[str, Any]:
    """Generate the world (see :func:`generate_world`) and write it under ``out_dir``.

    Defaults to the shipped location. Returns the manifest that was written.
    """
    out = Path(out_dir) if out_dir is not None else default_world_dir()
    arguments = {**world_defaults(), **generate_kwargs, "seed": seed}
    return write_splits(out, generate_world(**arguments), arguments)


def read_manifest(root: str | Path | None = None) -> dict[str, Any]:
    """The manifest of the world stored in ``root`` (default: the shipped world)."""
    path = (Path(root) if root is not None else default_world_dir()) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no world manifest at {path}; run `geffect build-world` to create the world")
    return json.loads(path.read_text(encoding="ascii"))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {line_number}: not valid JSON ({err.msg})") from err
    return rows


def read_splits(folder: Path, features: Callable[[str], datasets.Features | None] = lambda name: None,
                what: str = "world", rebuild: str = "geffect build-world") -> datasets.DatasetDict:
    """The splits stored in ``folder`` by :func:`write_splits`, checked against their manifest.

    ``features(name)`` gives a split's schema (None: inferred from the rows); ``what``
    and ``rebuild`` word the errors.
    """
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no {what} manifest at {manifest_path}; run `{rebuild}` to create it")
    manifest = json.loads(manifest_path.read_text(encoding="ascii"))
    out = {}
    for name, expected in manifest["sizes"].items():
        path = folder / f"{name}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{what} split {name!r} is missing: {path}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != manifest["sha256"][name]:
            raise ValueError(f"{path} does not match its manifest hash; regenerate with `{rebuild}`")
        rows = _read_jsonl(path)
        if len(rows) != expected:
            raise ValueError(f"{path} has {len(rows)} rows, manifest says {expected}")
        out[name] = datasets.Dataset.from_list(rows, features=features(name))
    return datasets.DatasetDict(out)


def load_world(root: str | Path | None = None) -> datasets.DatasetDict:
    """The embedded world as a ``DatasetDict`` (default: the shipped ``data/world``).

    Splits and columns follow the TOFU schema (see :func:`generate_world`); ``idk``
    has the single column ``answer``. Files are checked against the manifest.
    """
    folder = Path(root) if root is not None else default_world_dir()
    return read_splits(folder, lambda name: IDK_FEATURES if name == "idk" else QA_FEATURES)
