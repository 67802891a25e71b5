"""``geffect unlearn``: run an unlearning objective with live G-effect recording into a run directory."""

from __future__ import annotations

import argparse
import sys

from geffect.cli import EXIT_DIVERGED, UserError
from geffect.cli.options import add_run_options, run_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "unlearn",
        help="unlearn a forget split with an objective, recording G-effects",
        description="Run an unlearning objective from a target model on a task's forget data (`geffect tasks`; "
                    "default tofu) or on your own files (--forget FILE: JSONL, CSV or parquet with question/answer, "
                    "prompt/response or text columns). Every k steps the "
                    "G-effect of the objective gradient and of the applied update is recorded per layer and "
                    "probe instance into DIR (config.yaml, effects/history/risks.parquet, run.json, "
                    "checkpoints). A killed run continues with --resume.",
    )
    parser.add_argument("--objective", help="registered objective name (see `geffect objectives`) or "
                                            "package.module:function")
    parser.add_argument("--model", help="shipped model name (tiny, ...) or a Hugging Face model directory")
    parser.add_argument("--forget", help="forget split or data file (.jsonl/.json/.csv/.parquet, or a hub id) "
                                         "(default: the task's, forget10 for tofu)")
    parser.add_argument("--steps", type=int, help="optimiser steps (default 30)")
    parser.add_argument("--out", metavar="DIR", help="run directory (default runs/<objective>-<forget>-<time>)")
    add_run_options(parser, hparam_help="objective hyper-parameter, e.g. --hparam beta=0.2 (repeatable)",
                    set_help="any other UnlearnConfig field as YAML, e.g. --set lora='{r: 8}' (repeatable)")
    parser.add_argument("--config", metavar="FILE", help="a config.yaml to start from (flags override it)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geffect.errors import InputError
    from geffect.training import UnlearnConfig, unlearn

    try:
        config = UnlearnConfig.load(args.config) if args.config else None
        if config is None and args.objective is None and not args.resume:
            raise UserError("--objective is required (see `geffect objectives` for the names)")
        run = unlearn(args.objective, out=args.out, config=config, resume=args.resume,
                      progress=not args.no_progress, **run_settings(args))
    except (InputError, FileNotFoundError) as err:
        raise UserError(str(err).splitlines()[0]) from None
    history = run.history
    print(f"run: {run.path}  status: {run.status}  steps: {run.info.get('step')}  "
          f"seconds: {run.info.get('seconds', 0):.1f}")
    if not history.empty:
        last = history.iloc[-1]
        risks = "  ".join(f"{c}={last[c]:.4g}" for c in history.columns if c.startswith("risk_") and
                          not c.startswith("risk_change") and history[c].notna().any())
        print(f"final loss: {last['loss']:.4g}  {risks}")
    if run.status == "diverged":
        print(f"stopped: {run.info.get('message')}", file=sys.stderr)
        return EXIT_DIVERGED
    return 0
