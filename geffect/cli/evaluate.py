"""``geffect evaluate DIR``: the run's task evaluation of its unlearned model, written to DIR/metrics.json."""

from __future__ import annotations

import argparse

from geffect.cli import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a run's unlearned model with its task's suite",
        description="Evaluate the model of a run directory (written by `geffect unlearn`) with the evaluation "
                    "suite of the run's task (recorded in its config; see `geffect tasks`): for tofu the TOFU "
                    "metrics (answer probability, ROUGE-L recall, truth ratio, forget quality against the shipped "
                    "retain model, model utility); for a user's files mean NLL and greedy ROUGE-L on trained and "
                    "held-out rows. Writes DIR/metrics.json.",
    )
    parser.add_argument("run", metavar="DIR", help="run directory")
    parser.add_argument("--reference-model", "--retain-model", dest="reference_model", default="default",
                        help="model that never saw the forget data, for forget quality (default: the task's "
                             "shipped reference for the run, when there is one; 'none' to skip)")
    parser.add_argument("--max-examples", type=int, help="evaluate only the first N rows of each split")
    parser.add_argument("--batch-size", type=int, default=32, help="generation batch size (default 32)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geffect.errors import InputError
    from geffect.training import Run

    try:
        target = Run(args.run)
        reference = None if args.reference_model.lower() == "none" else args.reference_model
        metrics = target.evaluate(reference, max_examples=args.max_examples, batch_size=args.batch_size,
                                  progress=not args.no_progress)
    except (InputError, FileNotFoundError) as err:
        raise UserError(str(err).splitlines()[0]) from None
    undefined = metrics.pop("undefined", [])
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if undefined:
        print(f"undefined (NaN): {', '.join(undefined)}: the model's answer likelihoods are not finite "
              f"(run status {target.status!r})")
    print(f"written: {target.path / 'metrics.json'}")
    return 0
