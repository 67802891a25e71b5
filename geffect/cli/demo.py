"""``geffect demo``: load the embedded world and the shipped ``tiny`` model and summarise them.

For now a smoke test of the installation (no build, no network): split sizes,
the model's size, and a few greedy answers next to the truth.
"""

from __future__ import annotations

import argparse

from geffect.cli import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="load the embedded world and tiny model and show what they hold",
                                   description="Summarise the shipped world and tiny target model.")
    parser.add_argument("--model", default="tiny", help="model name or path (default: tiny)")
    parser.add_argument("--examples", type=int, default=3, help="greedy answers to show per split (default 3)")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from geffect.data import load_world
    from geffect.evaluation.generation import greedy_answers
    from geffect.evaluation.rouge import rouge_l_recall
    from geffect.models import load

    try:
        world = load_world()
        model, tokenizer = load(args.model)
    except FileNotFoundError as err:
        raise UserError(str(err)) from err
    print("World splits (rows):")
    for name, split in world.items():
        print(f"  {name:20s} {len(split):5d}")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\nModel {args.model!r}: {type(model).__name__}, {n_params:,} parameters, "
          f"{model.config.num_hidden_layers} blocks, on {next(model.parameters()).device}")
    for split in ("forget10", "retain90", "world_facts"):
        rows = world[split].select(range(min(args.examples, len(world[split]))))
        answers = greedy_answers(model, tokenizer, rows["question"])
        print(f"\n{split}:")
        for question, truth, answer in zip(rows["question"], rows["answer"], answers):
            print(f"  Q: {question}\n  model: {answer}\n  truth: {truth}  "
                  f"(ROUGE-L recall {rouge_l_recall(answer, truth):.2f})")
    return 0
