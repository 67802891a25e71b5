"""``geffect report RUN_DIR... --out DIR``: the HTML report (plus PNGs and summary.csv) of runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from geffect.cli import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write the HTML report of one or several run directories",
        description="Write a self-contained HTML report (figures embedded), the figures as PNG and "
                    "summary.csv for the given run directories (written by `geffect unlearn`).",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories to report on")
    parser.add_argument("--out", default="geffect-report", metavar="DIR",
                        help="output directory (default: ./geffect-report)")
    parser.add_argument("--title", default="geffect report", help="page title")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geffect.reporting import as_runs, report

    try:
        runs = as_runs([Path(path) for path in args.runs])
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None
    path = report(runs, args.out, title=args.title, progress=not args.no_progress)
    print(path)
    return 0
