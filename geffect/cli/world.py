"""``geffect build-world``: regenerate the embedded world and rebuild the tiny target models."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from geffect.cli import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build-world",
        help="regenerate the world, the tasks' data and scorers, and rebuild the shipped tiny models",
        description="Write the seeded world and the built-in tasks' data as JSON lines, train the "
                    "toxicity and harm scorers, the tokenizer and the tiny Llama models, and report "
                    "what each model knows.",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the world and the models (default 0)")
    parser.add_argument("--world-dir", default=None, help="where to write the world (default: data/world)")
    parser.add_argument("--tasks-dir", default=None, help="where to write the tasks' data (default: data/tasks)")
    parser.add_argument("--scorers-dir", default=None, help="where to write the scorers (default: data/scorers)")
    parser.add_argument("--models-dir", default=None, help="where to write the models (default: data/models)")
    parser.add_argument("--models", default=None,
                        help="comma-separated subset of models to build (default: all of them)")
    parser.add_argument("--world-only", action="store_true",
                        help="write the world, the tasks' data and the scorers; build no model")
    parser.add_argument("--workers", type=int, default=2,
                        help="models trained at once, one process each (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker (default 1)")
    parser.add_argument("--label-smoothing", type=float, default=None,
                        help="label smoothing of the answer loss (default 0.2, the shipped models'; 0 trains "
                             "on the plain NLL, closer to zero loss)")
    parser.add_argument("--smoothing-prior", default=None,
                        help="where the smoothed mass goes: every token (uniform, the default) or the tokens "
                             "that follow the previous one in the training labels (bigram)")
    parser.set_defaults(func=run_build_world)


def run_build_world(args: argparse.Namespace) -> int:
    from geffect.models import MODEL_SPECS, build_world_models
    from geffect.models.build import build_data
    from geffect.models.train import TrainConfig

    if args.world_only:
        print(json.dumps(build_data(args.seed, args.world_dir, args.tasks_dir, args.scorers_dir), indent=2))
        return 0
    names = tuple(MODEL_SPECS) if args.models is None else tuple(n.strip() for n in args.models.split(","))
    unknown = sorted(set(names) - set(MODEL_SPECS))
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODEL_SPECS)}")
    if args.threads < 1 or args.workers < 1:
        raise UserError(f"--threads and --workers must be at least 1, got {args.threads} and {args.workers}")
    config = TrainConfig()
    if args.label_smoothing is not None:
        if not 0 <= args.label_smoothing < 1:
            raise UserError(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
        config = replace(config, label_smoothing=args.label_smoothing)
    if args.smoothing_prior is not None:
        try:
            config = replace(config, smoothing_prior=args.smoothing_prior)
        except ValueError as err:  # TrainConfig names the priors it knows
            raise UserError(f"--smoothing-prior: {err}") from err
    report = build_world_models(args.models_dir, seed=args.seed, names=names, world_dir=args.world_dir,
                                tasks_dir=args.tasks_dir, scorers_dir=args.scorers_dir, workers=args.workers,
                                threads=args.threads, train_config=config)
    for name, entry in report["models"].items():
        missed = [target for target, holds in entry["targets"].items() if not holds]
        print(f"{name:14s} {entry['parameters']:,} params, {entry['epochs_run']} epochs, "
              f"{entry['bytes'] / 1e6:.1f} MB, targets: " + ("all hold" if not missed else f"MISSED {missed}"))
        print("  " + ", ".join(f"{k} {v:.3f}" for k, v in entry["metrics"].items()))
    print(f"built in {report['wall_seconds']:.0f} s wall, {report['cpu_seconds']:.0f} s CPU; "
          f"{report['total_bytes'] / 1e6:.1f} MB in all")
    return 0
