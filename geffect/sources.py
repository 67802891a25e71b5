"""Where a model or data reference points: a shipped name, a local path, or a Hugging Face hub id.

Resolving never waits on the network when the network cannot help. Shipped names and existing
paths resolve first. A reference that is neither goes to the hub only when it has the form of a
hub id and the hub is reachable (or its files are already in the local hub cache, which is then
read without the network); otherwise it fails at once, in one line naming the shipped names and
the closest one. Without this, ``from_pretrained`` retries an unreachable hub for 30-60 s and
then reports a missing local path as a malformed repo id.
"""

from __future__ import annotations

import difflib
import functools
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from geffect.errors import InputError

_PATH_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".safetensors", ".bin", ".pt", ".yaml", ".py")
REACH_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Source:
    """A resolved reference: what to pass to ``from_pretrained`` / a loader, and whether to stay offline."""

    location: str
    kind: str  # "shipped", "path" or "hub"
    local_only: bool


def hub_offline() -> bool:
    """Whether the user switched the hub off (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub's endpoint opens within ``timeout`` seconds (asked once per process)."""
    if hub_offline():
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    address = (url.hostname or "", url.port or (443 if url.scheme == "https" else 80))
    result: list[bool] = []

    def connect() -> None:  # in a thread: name resolution ignores socket timeouts
        try:
            socket.create_connection(address, timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def looks_like_path(text: str) -> bool:
    """True for references only a file system path can mean (``./x``, ``/x``, ``~/x``, ``a/b/c``, ``x.jsonl``)."""
    return (text.startswith((".", "/", "~")) or text.endswith(("/", os.sep)) or "\\" in text
            or text.count("/") > 1 or text.lower().endswith(_PATH_SUFFIXES))


def could_be_hub_id(text: str) -> bool:
    """Whether ``text`` has the form of a hub repository id (``name`` or ``namespace/name``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if looks_like_path(text):
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def in_hub_cache(repo_id: str, repo_type: str = "model") -> bool:
    """Whether the local hub cache holds a snapshot of ``repo_id``."""
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    return folder.is_dir() and any(folder.iterdir())


def closest(text: str, names: list[str]) -> str | None:
    """The name in ``names`` closest to ``text`` (case-insensitive), if any is close."""
    lowered = {name.lower(): name for name in names}
    match = difflib.get_close_matches(text.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def resolve_source(ref: str | Path, *, kind: str = "model", shipped: Mapping[str, Path] | None = None,
                   repo_type: str = "model") -> Source:
    """Resolve a ``kind`` reference (see the module docstring) or raise :class:`InputError` at once.

    ``shipped`` maps the names geffect ships to their folders.
    """
    text, shipped = str(ref), dict(shipped or {})
    if text in shipped:
        return Source(str(shipped[text]), "shipped", True)
    if Path(text).expanduser().exists():
        return Source(str(Path(text).expanduser()), "path", True)
    near = closest(text, list(shipped))
    named = f"shipped {kind}s: {', '.join(shipped)}" if shipped else ""
    hint = "; ".join(filter(None, [f"did you mean {near!r}?" if near else "", named]))
    hint = f" ({hint})" if hint else ""
    if not could_be_hub_id(text):
        raise InputError(f"{kind} {text!r}: no such file or directory{hint}")
    if near is not None and near.lower() == text.lower():
        raise InputError(f"unknown {kind} {text!r}{hint}")
    if in_hub_cache(text, repo_type):
        return Source(text, "hub", not hub_reachable())
    if not hub_reachable():
        what = f"not a shipped {kind}, " if shipped else ""
        raise InputError(f"{kind} {text!r} is {what}not an existing path, and the Hugging Face hub is not reachable "
                         f"from here (offline){hint}")
    return Source(text, "hub", False)
