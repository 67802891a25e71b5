"""Keep Python's cyclic garbage collector off the objects that live for the whole run.

A process that has imported torch, transformers and pandas tracks about 400 000 container
objects (functions, types, module dictionaries), and every full collection walks all of them
(about 0.2 s on one CPU core). Recording G-effects allocates enough short-lived containers to
set such collections off, and on ``tiny`` they cost about half as much as the measurement
itself. :func:`steady_heap` collects once, freezes what exists then (``gc.freeze``: left out of
later collections, still freed by reference counting) and unfreezes on exit, so that garbage
made during the loop is collected as usual.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def steady_heap() -> Iterator[None]:
    """Freeze the objects alive now for the duration (a no-op inside another freeze)."""
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
