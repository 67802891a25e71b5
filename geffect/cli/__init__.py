"""The ``geffect`` command line: a thin layer over the Python API.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (taking the
parsed arguments, returning an exit code). One exit-code table serves every command:
0 done, 2 bad input (any :class:`geffect.errors.InputError`, printed as one line without a
traceback), 3 a run diverged, 1 a bug (any other exception, with its traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from geffect.errors import InputError, one_line

# Sub-command modules, in the order ``geffect --help`` lists them.
COMMAND_MODULES: list[str] = ["world", "demo", "report", "objectives", "unlearn", "evaluate", "compare", "diagnose",
                             "reveal_release", "tasks"]


EXIT_DONE, EXIT_BUG, EXIT_BAD_INPUT, EXIT_DIVERGED = 0, 1, 2, 3


class UserError(InputError):
    """A problem with the user's input found by the CLI itself: printed as one clear line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geffect",
        description="Measure, train and report the gradient effects (G-effects) of LLM-unlearning objectives.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"geffect.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args.func(args) or EXIT_DONE)
    except InputError as err:
        print(f"geffect {args.command}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
