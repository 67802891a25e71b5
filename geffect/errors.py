"""The errors a user can fix, shared by every stage so that the CLI maps them to one exit code.

Anything raised as :class:`InputError` (or a subclass) is bad input: its message is one line
saying what is wrong and where (file, row, field, flag), and ``geffect`` prints it without a
traceback and exits with code 2. Every other exception is a bug (exit code 1, traceback).
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input the user can fix (a flag, a file, a name, a run directory): one line, exit code 2."""


class DamagedRunError(InputError):
    """A file of a run directory cannot be read (truncated, corrupt, not what geffect wrote)."""


class ObjectiveError(InputError):
    """A user's objective cannot be used: the message names the function and what was expected."""


class RunInUseError(InputError):
    """Another live process holds the run directory."""


def one_line(err: BaseException) -> str:
    """The first line of an exception's message (the type's name when the message is empty)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
