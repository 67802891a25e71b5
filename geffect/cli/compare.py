"""``geffect compare DIR... --out DIR``: one table of headline numbers for several runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare runs in one table",
        description="Summarise run directories side by side: status, steps, seconds, final loss, mean probe "
                    "risks before and after, cumulative G-effect per probe, and evaluation metrics when "
                    "`geffect evaluate` has written them. Writes compare.csv and compare.md to --out. A run that "
                    "cannot be read (damaged files) is named on stderr and left out.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    parser.add_argument("--out", default="geffect-compare", metavar="DIR",
                        help="output directory (default ./geffect-compare)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from geffect.cli.runs import read_each
    from geffect.training.summary import summarize, to_markdown

    table = pd.DataFrame(read_each(args.runs, summarize, "compare"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "compare.csv", index=False)
    markdown = to_markdown(table)
    (out / "compare.md").write_text(markdown)
    print(markdown, end="")
    print(f"written: {out / 'compare.csv'}, {out / 'compare.md'}")
    return 0
