"""``geffect reveal-release``: unlearn a concept without a forget set (Reveal and Release, issue #11)."""

from __future__ import annotations

import argparse

from geffect.cli import EXIT_DIVERGED, EXIT_DONE, UserError
from geffect.cli.options import parse_pairs

# flag -> (RevealReleaseConfig field, type, help)
FLAGS: dict[str, tuple[str, type, str]] = {
    "--iterations": ("iterations", int, "Reveal/Release iterations K (default 4)"),
    "--rounds": ("rounds", int, "bandit rounds per Reveal (default 60)"),
    "--policy": ("policy", str, "neural_ucb (default) or random (the ablation)"),
    "--steps": ("steps", int, "optimiser steps per Release (default 30)"),
    "--lr": ("lr", float, "Release learning rate (default 1e-3)"),
    "--objective": ("objective", str, "registered base objective of each Release (default npo_gd)"),
    "--lambda1": ("lambda1", float, "O-LoRA orthogonality weight (default 0.5; 0 turns it off)"),
    "--seed": ("seed", int, "seed of the bandits, sampling and runs (default 0)"),
    "--eval-examples": ("eval_examples", int, "examples per evaluation split (default 200)"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reveal-release",
        help="unlearn a concept from self-generated data (NeuralUCB instructions, stacked O-LoRA modules)",
        description="Reveal and Release (Xie et al. 2025, as issue #11 reads it): NeuralUCB picks instructions "
                    "that make the model reveal a concept, the revealed completions train a new LoRA module "
                    "(an ordinary geffect run with G-effect records) orthogonal to the earlier ones; repeat. "
                    "DIR gets one folder per iteration (reveal/ data and bandit rounds, release/ run) and "
                    "summary.csv. A killed procedure continues with --resume.",
    )
    parser.add_argument("--concept", help="concept to forget: persons or toxicity (see geffect.procedures)")
    parser.add_argument("--model", help="shipped model name or a Hugging Face model directory (default tiny)")
    parser.add_argument("--out", metavar="DIR", required=True, help="output directory")
    for flag, (field, kind, text) in FLAGS.items():
        parser.add_argument(flag, dest=field, type=kind, help=text)
    parser.add_argument("--squared", action="store_true", default=None,
                        help="squared overlaps in the orthogonality penalty")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="fields",
                        help="any other RevealReleaseConfig field as YAML, e.g. --set lora='{r: 4}' (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the procedure in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geffect.procedures import reveal_release
    from geffect.training import ConfigError

    settings = parse_pairs(args.fields, "--set")
    for field, *_ in FLAGS.values():
        if getattr(args, field) is not None:
            settings[field] = getattr(args, field)
    if args.squared:
        settings["squared"] = True
    if args.concept is None and not args.resume:
        raise UserError("--concept is required (persons or toxicity)")
    try:
        result = reveal_release(args.concept, args.model, args.out, resume=args.resume,
                                progress=not args.no_progress, **settings)
    except (ConfigError, FileNotFoundError) as err:
        raise UserError(str(err).splitlines()[0]) from None
    summary = result.summary
    print(f"reveal-release: {result.path}  status: {result.status}  iterations: {result.info.get('iterations')}")
    if result.info.get("message"):
        print(f"stopped: {result.info['message']}")
    if not summary.empty:
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return EXIT_DIVERGED if result.status == "diverged" else EXIT_DONE
