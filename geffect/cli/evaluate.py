"""``geffect evaluate DIR``: TOFU metrics of an unlearning run's model, written to DIR/metrics.json."""

from __future__ import annotations

import argparse

from geffect.cli import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="TOFU metrics of a run's unlearned model",
        description="Evaluate the model of a run directory (written by `geffect unlearn`) on the TOFU metrics: "
                    "answer probability, ROUGE-L recall, truth ratio, forget quality (against the shipped "
                    "retain model, when there is one) and model utility. Writes DIR/metrics.json.",
    )
    parser.add_argument("run", metavar="DIR", help="run directory")
    parser.add_argument("--retain-model", default="default",
                        help="model for forget quality (default: the shipped retain model matching the run; "
                             "'none' to skip)")
    parser.add_argument("--max-examples", type=int, help="evaluate only the first N rows of each split")
    parser.add_argument("--batch-size", type=int, default=32, help="generation batch size (default 32)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geffect.training import ConfigError, Run

    try:
        target = Run(args.run)
        retain = None if args.retain_model.lower() == "none" else args.retain_model
        metrics = target.evaluate(retain_model=retain, max_examples=args.max_examples,
                                  batch_size=args.batch_size, progress=not args.no_progress)
    except (ConfigError, FileNotFoundError) as err:
        raise UserError(str(err).splitlines()[0]) from None
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    print(f"written: {target.path / 'metrics.json'}")
    return 0
