"""The ``geffect`` command line: a thin layer over the Python API.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (taking the
parsed arguments, returning an exit code). Errors a user can fix are raised as
:class:`UserError` and printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command modules, in the order ``geffect --help`` lists them.
COMMAND_MODULES: list[str] = ["world", "demo", "report", "objectives", "unlearn", "evaluate", "compare", "diagnose"]


class UserError(Exception):
    """A problem with the user's input: printed as one clear line, exit code 2."""


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
        return 1
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"geffect {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
