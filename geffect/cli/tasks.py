"""``geffect tasks``: the registered unlearning tasks, with their data, probes and evaluation."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tasks",
        help="list the unlearning tasks",
        description="List the registered unlearning tasks (`geffect unlearn --task NAME`): what each forgets "
                    "and retains, its default probes, its evaluation suite and reference model.",
    )
    parser.add_argument("name", nargs="?", help="show only this task")
    parser.set_defaults(func=run)


def describe(task) -> list[str]:
    """The lines ``geffect tasks`` prints for ``task``."""
    probes = task.default_probes(task.forget, task.retain)
    lines = [f"{task.name}: {task.description}",
             f"    forget: {task.forget}   retain: {task.retain or '-'}   "
             f"probes: {', '.join(f'{k}={v}' for k, v in probes.items())}",
             f"    evaluation: {task.evaluation_name()}"]
    extras = [f"reference model: {task.reference_model}"] if task.reference_model else []
    if task.holdout:
        extras.append(f"holdout: {task.holdout:g} of forget/retain rows")
    if extras:
        lines.append("    " + "   ".join(extras))
    return lines


def run(args: argparse.Namespace) -> int:
    from geffect.cli import UserError
    from geffect.tasks import UnknownTask, get_task, list_tasks

    try:
        names = [get_task(args.name).name] if args.name else list_tasks()
    except UnknownTask as err:
        raise UserError(str(err)) from None
    for i, name in enumerate(names):
        if i:
            print()
        print("\n".join(describe(get_task(name))))
    return 0
