"""Every task, unlearned from ``tiny`` by GA, NPO, GD and a method built for it, with its metrics before and after.

For each built-in task (TOFU authors, hazardous knowledge, toxicity, harmful responses, a
memorised book) this runs GA, NPO and GD — plus RMU on ``hazard`` (Li et al. 2024, the
WMDP method) and Yao et al.'s objective on ``harm`` — for 30 AdamW steps, recording
G-effects at every step on the task's forget and retain probes, then the task's own
evaluation suite. It writes ``tasks.csv`` (every metric before and after, long format) and
``tasks.md`` (one row per task and objective: the task's main forget metric and retain
metric before → after, the run's total forget and retain G-effect, the seconds the 30
recorded steps took), and puts ``tasks.md`` into README.md between the
``<!-- tasks-table -->`` markers.

Sizes (``--size``): ``full`` (default) evaluates 64 rows per split and records on probes of 32
instances; ``quick`` 16 and 16, for a shared machine. The steps are 30 in both. The table
written into the README says which size produced it.

Run: ``python analyses/tasks_table.py [--size full|quick] [--tasks ...] [--out analyses/out/tasks]
[--max-examples N] [--no-readme]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402

import geffect  # noqa: E402
from geffect.models import load  # noqa: E402
from geffect.reporting import tables  # noqa: E402
from geffect.tasks import evaluate_task  # noqa: E402
from geffect.training.summary import to_markdown  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MARK_START, MARK_END = "<!-- tasks-table:start -->", "<!-- tasks-table:end -->"
SETTINGS = dict(model="tiny", steps=30, batch_size=8, record_every=1, lr=5e-4)
SIZES = {"full": dict(max_examples=64, probe_size=32), "quick": dict(max_examples=16, probe_size=16)}
# RMU at tiny scale (see analyses/objectives_table.py): a steering target longer than the
# activations, a retain weight on the forget term's scale, blocks 0..1 trained, a larger step.
RMU = dict(lr=1e-2, trainable=[r"layers\.[01]\."], hparams=dict(steering_coeff=100.0, alpha=10.0))


@dataclass(frozen=True)
class Plan:
    """What to run on a task and which two of its metrics the README table shows."""

    forget_metric: str  # should fall
    retain_metric: str  # should stay
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # task-fitting objective -> settings


PLANS = {
    "tofu": Plan("forget_rouge", "retain_rouge"),
    "hazard": Plan("hazard_mc", "benign_mc", {"rmu": RMU}),
    "toxicity": Plan("toxic_rate", "neutral_fluency"),
    "harm": Plan("harmful_rate", "normal_similarity", {"yao": {}}),
    "book": Plan("verbmem_forget", "verbmem_retain"),
}
BASELINES = ("ga", "npo", "gd")


def total_effect(run: Any, probe: str) -> float:
    """The run's whole-model G-effect on ``probe``, summed over its steps."""
    return float(tables.cumulative(tables.step_series(run.effects, probe)).iloc[-1])


def run_task(task: str, plan: Plan, out: Path, max_examples: int | None,
             probe_size: int) -> tuple[list[dict], list[dict]]:
    """(README rows, long metric rows) of every objective on ``task``."""
    target, tokenizer = load(SETTINGS["model"])
    before = evaluate_task(target, tokenizer, task, model_name=SETTINGS["model"], max_examples=max_examples,
                           progress=False)
    rows, long = [], [{"task": task, "objective": "(tiny)", "metric": k, "value": v} for k, v in before.items()
                      if isinstance(v, float)]
    for objective, extra in [*((name, {}) for name in BASELINES), *plan.extra.items()]:
        folder = out / "runs" / f"{task}-{objective}"
        shutil.rmtree(folder, ignore_errors=True)  # this script's own earlier run: start fresh
        run = geffect.unlearn(objective, task=task, out=folder, progress=False, probe_size=probe_size,
                              **{**SETTINGS, **extra})
        if run.status != "finished":
            print(f"{task}/{objective}: run {run.status}: {run.info.get('message')}", flush=True)
            continue
        after = run.evaluate(max_examples=max_examples, progress=False)
        long += [{"task": task, "objective": objective, "metric": k, "value": v} for k, v in after.items()
                 if isinstance(v, float)]
        rows.append({"task": task, "objective": objective, "forget metric": plan.forget_metric,
                     "before": before[plan.forget_metric], "after": after[plan.forget_metric],
                     "retain metric": plan.retain_metric, "retain before": before[plan.retain_metric],
                     "retain after": after[plan.retain_metric],
                     "forget G-effect": total_effect(run, "forget"), "retain G-effect": total_effect(run, "retain"),
                     "seconds": run.info["seconds"]})
        print(f"{task}/{objective}: {plan.forget_metric} {before[plan.forget_metric]:.3f} -> "
              f"{after[plan.forget_metric]:.3f}, {plan.retain_metric} {before[plan.retain_metric]:.3f} -> "
              f"{after[plan.retain_metric]:.3f} ({run.info['seconds']:.0f} s)", flush=True)
    return rows, long


def write_readme(markdown: str, readme: Path) -> bool:
    """Replace the block between the tasks-table markers of ``readme``; False if it has none."""
    text = readme.read_text(encoding="utf-8")
    if MARK_START not in text or MARK_END not in text:
        return False
    head, rest = text.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    readme.write_text(f"{head}{MARK_START}\n{markdown}{MARK_END}{tail}", encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "analyses" / "out" / "tasks", help="output directory")
    parser.add_argument("--tasks", nargs="*", default=list(PLANS), help="subset of tasks (default: all)")
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="evaluation and probe size")
    parser.add_argument("--max-examples", type=int, help="rows per evaluated split (default: the size's)")
    parser.add_argument("--no-readme", action="store_true", help="do not write the table into README.md")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.tasks) - set(PLANS))
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choose from {sorted(PLANS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    size = SIZES[args.size]
    max_examples = size["max_examples"] if args.max_examples is None else args.max_examples
    rows, long = [], []
    for task in args.tasks:
        task_rows, task_long = run_task(task, PLANS[task], args.out, max_examples, size["probe_size"])
        rows += task_rows
        long += task_long
    table = pd.DataFrame(rows)
    pd.DataFrame(long).to_csv(args.out / "tasks.csv", index=False)
    seconds = time.perf_counter() - start
    markdown = to_markdown(table, digits=3) + (
        f"\nSize `{args.size}`: {max_examples} rows per evaluated split, probes of {size['probe_size']} "
        f"instances, 30 steps; all runs and evaluations took {seconds / 60:.0f} min "
        f"(`python analyses/tasks_table.py --size {args.size}`).\n")
    (args.out / "tasks.md").write_text(markdown)
    print(markdown)
    if set(args.tasks) != set(PLANS):
        print("a subset of the tasks: README.md left as it is; the table is in", args.out / "tasks.md")
    elif not args.no_readme and not write_readme(markdown, ROOT / "README.md"):
        print("README.md has no tasks-table markers; the table is in", args.out / "tasks.md")
    return table


if __name__ == "__main__":
    main()
