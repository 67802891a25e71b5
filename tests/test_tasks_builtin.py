"""Every built-in task, as the issue asks: `unlearn --task T --objective ga --steps N` then `evaluate` (CLI and
Python), on the shipped ``tiny`` model. New built-in tasks are covered as soon as they are registered."""

from __future__ import annotations

import json

import pytest

import geffect
from geffect.cli import main
from geffect.tasks import list_tasks

BUILTIN = [name for name in list_tasks() if name != "files"]  # files needs the user's --forget FILE


@pytest.mark.slow
@pytest.mark.parametrize("task", BUILTIN)
def test_unlearn_then_evaluate_every_builtin_task(task, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["unlearn", "--task", task, "--objective", "ga", "--steps", "2", "--probe-size", "4",
                 "--out", str(out), "--no-progress"]) == 0
    assert main(["evaluate", str(out), "--max-examples", "4", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["steps"] == 2
    numbers = {k: v for k, v in metrics.items() if isinstance(v, float)}
    assert numbers, metrics

    run = geffect.unlearn("ga", task=task, steps=2, probe_size=4, out=tmp_path / "py", progress=False)
    assert run.config.task == task and run.status == "finished"
    again = run.evaluate(max_examples=4, progress=False)
    assert again.keys() == metrics.keys()
