"""``geffect objectives [NAME]``: list the registered objectives with their formulas, or describe one."""

from __future__ import annotations

import argparse

from geffect.cli import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "objectives",
        help="list the unlearning objectives and their formulas",
        description="List the registered unlearning objectives (name, family, loss formula), or with NAME "
                    "show one objective's formula, paper, inputs and default hyper-parameters.",
    )
    parser.add_argument("name", nargs="?", help="an objective to describe in full")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geffect.objectives import describe, get_objective, list_objectives

    if args.name:
        try:
            print(describe(args.name))
        except KeyError as err:
            raise UserError(err.args[0]) from None
        return 0
    specs = [get_objective(name) for name in list_objectives()]
    width = max(len(s.name) for s in specs)
    family = max(len(s.family) for s in specs)
    for spec in specs:
        print(f"{spec.name:<{width}}  {spec.family:<{family}}  {spec.summary()}")
    return 0
