"""``geffect report RUN_DIR... --out DIR``: the HTML report (plus PNGs and summary.csv) of runs."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write the HTML report of one or several run directories",
        description="Write a self-contained HTML report (figures embedded), the figures as PNG and "
                    "summary.csv for the given run directories (written by `geffect unlearn`). A run that cannot "
                    "be read (damaged files) is named on stderr and left out.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories to report on")
    parser.add_argument("--out", default="geffect-report", metavar="DIR",
                        help="output directory (default: ./geffect-report)")
    parser.add_argument("--title", default="geffect report", help="page title")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geffect.cli.runs import read_each
    from geffect.reporting import as_run, as_runs, report

    runs = as_runs(read_each(args.runs, as_run, "report"))
    path = report(runs, args.out, title=args.title, progress=not args.no_progress)
    print(path)
    return 0
