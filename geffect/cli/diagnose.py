"""``geffect diagnose path/to/module.py:loss_fn``: run a new objective beside baselines and report.

The objective is checked with one dry call before any run starts; problems in it are printed
as one line naming the function and what was expected (see ``geffect.reporting.new_objective``).
"""

from __future__ import annotations

import argparse
import sys

from geffect.cli import EXIT_DIVERGED, EXIT_DONE, UserError
from geffect.cli.options import add_run_options, run_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "diagnose",
        help="run a new objective beside GA/NPO/WGA and write the comparison report",
        description="Validate an objective function (one dry call on a real batch), unlearn with it and with "
                    "baseline objectives under the same settings, and write the HTML report of all runs. "
                    "The function has the signature of the built-ins: fn(model, forget, retain=None, "
                    "ref_model=None, **hparams) -> geffect.objectives.ObjectiveOutput.",
    )
    parser.add_argument("objective", metavar="MODULE:FUNCTION",
                        help="path/to/module.py:function, package.module:function, or a registered name")
    parser.add_argument("--baselines", default="ga,npo,wga",
                        help="comma-separated registered objectives to compare with (default ga,npo,wga; "
                             "'' for none)")
    parser.add_argument("--model", default="tiny", help="shipped model name or HF model directory (default tiny)")
    parser.add_argument("--forget", help="forget split or data file (default: the task's, forget10 for tofu)")
    parser.add_argument("--steps", type=int, help="optimiser steps per run (default 30, or use --epochs)")
    parser.add_argument("--out", metavar="DIR", help="output directory (default runs/diagnose-<function>)")
    parser.add_argument("--name", help="run name of the new objective (default: the function's name)")
    add_run_options(parser, hparam_help="hyper-parameter of the new objective only (repeatable)",
                    set_help="any other UnlearnConfig field as YAML, shared by all runs (repeatable)")
    parser.add_argument("--evaluate", action="store_true", help="add the task's metrics of every run to the report")
    parser.add_argument("--eval-examples", type=int, metavar="N", help="rows per split for --evaluate")
    parser.add_argument("--no-reuse", action="store_true",
                        help="retrain baselines even if a finished run with the same settings exists")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from geffect.reporting.new_objective import diagnose
    from geffect.reporting.report import SUMMARY_FILE

    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # e.g. "Loading weights" bars
    fields = run_settings(args)
    hparams = fields.pop("hparams", {})
    baselines = [name.strip() for name in args.baselines.split(",") if name.strip()]
    try:
        path = diagnose(args.objective, baselines, out=args.out, hparams=hparams, name=args.name,
                        evaluate=args.evaluate, eval_examples=args.eval_examples, reuse=not args.no_reuse,
                        progress=not args.no_progress, **fields)
    except FileNotFoundError as err:
        raise UserError(str(err).splitlines()[0]) from None
    print(path)
    summary = pd.read_csv(path.parent / SUMMARY_FILE)
    diverged = summary.loc[summary["status"] == "diverged", "run"].tolist()
    if diverged:
        print(f"diverged: {', '.join(map(str, diverged))} (their records stop at the non-finite step; see the report)",
              file=sys.stderr)
        return EXIT_DIVERGED
    return EXIT_DONE
