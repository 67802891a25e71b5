"""Reading the run directories a command is given: a run that cannot be read (damaged, not a run,
no records) is named on stderr in one line and skipped, and the command carries on with the rest."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from geffect.cli import UserError
from geffect.errors import InputError, one_line

T = TypeVar("T")


def read_each(paths: Iterable[str | Path], read: Callable[[Path], T], command: str) -> list[T]:
    """``read(path)`` for every path; unreadable runs are reported and skipped (UserError if none is left)."""
    items, problems = [], []
    for path in map(Path, paths):
        try:
            items.append(read(path))
        except (InputError, FileNotFoundError, ValueError) as err:  # ValueError: not a run, or no records
            problems.append((path, one_line(err)))
    if not items and len(problems) == 1:
        raise UserError(problems[0][1])
    for path, problem in problems:
        print(f"geffect {command}: skipped {str(path)!r}: {problem}", file=sys.stderr)
    if not items:
        raise UserError(f"none of the {len(problems)} given runs could be read")
    return items
