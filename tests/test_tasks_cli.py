"""The CLI of tasks and user files, as a user runs it (subprocesses): `geffect tasks`, `--task`, `--forget FILE`,
bad files refused in one line before any model loads, and a user's files trained and evaluated end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def geffect(*args: str, timeout: int = 900, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", "import sys; from geffect.cli import main; sys.exit(main())", *args],
                          env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_tasks_lists_every_task_with_its_data_and_evaluation():
    done = geffect("tasks")
    assert done.returncode == 0, done.stderr
    assert "tofu: " in done.stdout and "files: " in done.stdout
    assert "forget: forget10   retain: retain90   probes: forget=forget10, retain=retain90" in done.stdout
    assert "evaluation: TOFU metrics" in done.stdout
    one = geffect("tasks", "tofo")
    assert one.returncode == 2 and "did you mean 'tofu'?" in one.stderr and len(one.stderr.splitlines()) == 1


def test_a_bad_file_is_refused_in_one_line_by_the_command(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"question": "Q?", "answer": "A."}\n{"question": "Q2?"}\n')
    done = geffect("unlearn", "--objective", "ga", "--forget", str(tmp_path / "bad.jsonl"), "--out",
                   str(tmp_path / "run"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"geffect unlearn: error: {tmp_path / 'bad.jsonl'}, row 2 (line 2): missing field "
                                   "'answer' (the row has ['question'])")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["--task", "tofo"], "unknown task 'tofo' (did you mean 'tofu'?)"),
    (["--forget", "{bad}"], "bad.jsonl, row 2 (line 2): field 'answer' must be a string, got int 42"),
    (["--forget", "{empty}"], "empty.csv: empty (no rows)"),
    (["--forget", "{good}", "--probe", "extra={bad}"], "bad.jsonl, row 2 (line 2)"),
    (["--forget", "{good}", "--retain", "{nothing}"], "nothing.parquet: no such file"),
    (["--objective", "idk", "--forget", "{text}"], "forget view 'idk'"),
])
def test_bad_data_is_one_line_before_any_model_loads(args, message, tmp_path, monkeypatch, capsys):
    import geffect.models
    from geffect.cli import main

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load before the data is checked")

    monkeypatch.setattr(geffect.models, "load", no_model)
    files = {"bad": tmp_path / "bad.jsonl", "empty": tmp_path / "empty.csv", "good": tmp_path / "good.jsonl",
             "nothing": tmp_path / "nothing.parquet", "text": tmp_path / "text.jsonl"}
    files["bad"].write_text('{"question": "Q?", "answer": "A."}\n{"question": "Q2?", "answer": 42}\n')
    files["empty"].write_text("")
    files["good"].write_text('{"question": "Q?", "answer": "A."}\n')
    files["text"].write_text('{"text": "some passage"}\n')
    args = [a.format(**files) for a in args]
    if "--objective" not in args:
        args = ["--objective", "ga", *args]
    assert main(["unlearn", *args, "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()  # nothing half-written


@pytest.mark.slow
def test_user_files_train_and_evaluate_end_to_end(tmp_path):
    forget = [{"prompt": f"Recite charm {i}:", "response": f" moon {i} and ember, turn and remember"} for i in range(20)]
    retain = [{"text": f"The ferry to island {i} leaves at {i + 6} o'clock every morning."} for i in range(20)]
    probe = [{"question": f"When does ferry {i} leave?", "answer": f"At {i + 6} o'clock."} for i in range(5)]
    (tmp_path / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in forget))
    pd.DataFrame(retain).to_csv(tmp_path / "retain.csv", index=False)
    pd.DataFrame(probe).to_parquet(tmp_path / "probe.parquet")
    out = tmp_path / "run"
    done = geffect("unlearn", "--objective", "gd", "--forget", "forget.jsonl", "--retain", "retain.csv",
                   "--probe", "forget=forget.jsonl", "--probe", "ferries=probe.parquet", "--steps", "2",
                   "--batch-size", "4", "--probe-size", "4", "--out", str(out), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = (out / "config.yaml").read_text()
    assert "task: files" in config and "holdout: 0.1" in config
    assert f"forget: {tmp_path / 'forget.jsonl'}" in config  # recorded absolute: evaluate works from anywhere
    heldout = json.loads((out / "heldout.json").read_text())
    assert heldout["forget"]["rows"] == 20 and len(heldout["forget"]["heldout"]) == 2
    assert heldout["retain"]["rows"] == 20 and len(heldout["retain"]["heldout"]) == 2
    probed = [json.loads(line)["instance"] for line in (out / "probes" / "forget.jsonl").read_text().splitlines()]
    assert not set(probed) & set(heldout["forget"]["heldout"])  # held-out rows are never trained on or probed

    evaluated = geffect("evaluate", str(out), "--no-progress", cwd=REPO)
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "files" and metrics["n_forget"] == 18 and metrics["n_forget_heldout"] == 2
    assert metrics["n_retain_heldout"] == 2 and 0 <= metrics["forget_heldout_rouge"] <= 1
    assert metrics["forget_nll"] > 0 and metrics["retain_heldout_nll"] > 0

    # a changed file no longer matches the recorded held-out rows: evaluation refuses in one line
    (tmp_path / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in forget[:10]))
    changed = geffect("evaluate", str(out), "--no-progress")
    assert changed.returncode == 2 and "changed since it was trained" in changed.stderr
