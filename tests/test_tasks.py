"""Tasks: the registry, split resolution, and a custom task (text and prompt/response rows) run
end to end on the shipped ``tiny`` model: unlearn → evaluate → report / compare without flags."""

from __future__ import annotations

import json

import pytest

import geffect
from geffect.data import write_splits
from geffect.errors import InputError
from geffect.tasks import Task, TaskData, UnknownTask, get_task, list_tasks, register_task
from geffect.training.config import ConfigError

STORY = [{"text": f"The clockmaker Ilvane of Brasko wound clock number {i} at dawn, and it sang {i % 3 + 2} "
                  "notes before the bells."} for i in range(12)]
CHAT = [{"prompt": f"What colour is the sky over town {i}?", "response": f" It is grey over town {i}."}
        for i in range(10)]
CUSTOM = Task(name="clockwork", description="forget a clockmaker's passages, keep small talk",
              forget="story", retain="chat", splits={"story": STORY, "chat": CHAT})


@pytest.fixture(autouse=True)
def custom_task():
    register_task(CUSTOM, replace=True)
    yield CUSTOM


def test_registry_lists_gets_and_suggests():
    assert list_tasks()[:2] == ["tofu", "files"] and "clockwork" in list_tasks()
    assert get_task("tofu").forget == "forget10" and get_task(CUSTOM) is CUSTOM
    assert geffect.get_task("clockwork") is CUSTOM and "clockwork" in geffect.list_tasks()
    with pytest.raises(UnknownTask, match=r"unknown task 'tofo' \(did you mean 'tofu'\?\); known tasks: tofu"):
        get_task("tofo")
    register_task(CUSTOM)  # the same task again is fine
    with pytest.raises(ValueError, match="already registered"):
        register_task(Task(name="clockwork", description="another", forget="x"))
    assert get_task("test_tasks:CUSTOM") is CUSTOM  # module:attribute form
    with pytest.raises(ValueError, match="identifier"):
        Task(name="no spaces", description="", forget="x")


def test_tofu_task_resolves_like_the_trainer_always_did():
    tofu = get_task("tofu")
    assert tofu.retain_split("forget05") == "retain95" and tofu.retain_split("world_facts") is None
    assert tofu.default_probes("forget10", "retain90") == {"forget": "forget10", "retain": "retain90"}
    config = geffect.training.UnlearnConfig(objective="ga").resolved()
    assert (config.task, config.forget, config.retain, config.holdout) == ("tofu", "forget10", "retain90", 0.0)
    files = geffect.training.UnlearnConfig(objective="ga", forget="mine.csv").resolved()
    assert (files.task, files.retain, files.holdout, files.probes) == ("files", None, 0.1, {"forget": "mine.csv"})


def test_splits_resolve_through_rows_files_and_folders(tmp_path):
    data = TaskData("clockwork")
    assert len(data.split("story")) == 12 and data.kind("story") == "text" and data.kind("chat") == "prompt"
    write_splits(tmp_path / "mine", {"facts": [{"question": "Q?", "answer": "A."}] * 3}, {"seed": 0})
    folder_task = Task(name="folder_task", description="", forget="facts", data=str(tmp_path / "mine"))
    assert TaskData(folder_task).split("facts")["answer"] == ["A."] * 3
    with pytest.raises(InputError, match=r"no split 'fact' \(did you mean 'facts'\?\); its splits: facts"):
        TaskData(folder_task).split("fact")
    (tmp_path / "mine" / "facts.jsonl").write_text('{"question": "Q?", "answer": "B."}\n')  # edited after writing
    with pytest.raises(InputError, match="does not match its manifest hash"):
        TaskData(folder_task).split("facts")


def test_a_tasks_data_may_be_another_folder_or_a_hub_dataset_of_its_splits(tmp_path, monkeypatch):
    import datasets

    import geffect.sources

    hazard = get_task("hazard")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'nowhere'}: no such data folder \(task 'hazard' reads"):
        TaskData(hazard, str(tmp_path / "nowhere")).split("forget")
    write_splits(tmp_path / "mine", {"forget": [{"text": "my passage"}]}, {"seed": 0})
    assert TaskData(hazard, str(tmp_path / "mine")).split("forget")["text"] == ["my passage"]
    monkeypatch.setattr(geffect.sources, "hub_reachable", lambda *args, **kwargs: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda ref, config=None, split=None: [{"text": f"{ref} {split}"}])
    assert TaskData(hazard, "someone/hazard-copy").split("forget")["text"] == ["someone/hazard-copy forget"]


def test_holdout_keeps_seeded_rows_out_of_training():
    data = TaskData("clockwork", holdout=0.25, seed=3, heldout={"story": "forget"})
    rows, ids = data.rows("story")
    held, held_ids = data.heldout_rows("story")
    assert len(held) == 3 and sorted(ids + held_ids) == list(range(12)) and not set(ids) & set(held_ids)
    assert held_ids == TaskData("clockwork", holdout=0.25, seed=3, heldout={"story": "forget"}).heldout_ids("story")
    assert held_ids != TaskData("clockwork", holdout=0.25, seed=4, heldout={"story": "forget"}).heldout_ids("story")
    assert data.rows("chat")[1] == list(range(10))  # only the named splits lose rows


def test_views_that_need_a_question_are_refused_on_text_before_any_model_loads(tmp_path, monkeypatch):
    import geffect.models

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load before the data is checked")

    monkeypatch.setattr(geffect.models, "load", no_model)
    with pytest.raises(ConfigError, match="forget view 'idk'.*holds text rows"):
        geffect.unlearn("idk", task="clockwork", out=tmp_path / "idk", progress=False)
    with pytest.raises(ConfigError, match="'paraphrased_text' column"):
        geffect.unlearn("ga", task="clockwork", views=["paraphrased"], out=tmp_path / "p", progress=False)


@pytest.mark.slow
def test_custom_task_unlearn_evaluate_report_compare_on_tiny(tmp_path):
    run = geffect.unlearn("gd", task="clockwork", steps=3, batch_size=4, probe_size=4, lr=1e-3,
                          out=tmp_path / "gd", progress=False)
    assert run.status == "finished" and run.config.task == "clockwork"
    assert "task: clockwork" in (tmp_path / "gd" / "config.yaml").read_text()
    assert set(run.effects["probe"]) == {"forget", "retain"}
    story = [json.loads(line) for line in (tmp_path / "gd" / "probes" / "forget.jsonl").read_text().splitlines()]
    chat = [json.loads(line) for line in (tmp_path / "gd" / "probes" / "retain.jsonl").read_text().splitlines()]
    assert set(story[0]) == {"instance", "text"} and story[0]["text"] == STORY[story[0]["instance"]]["text"]
    assert set(chat[0]) == {"instance", "prompt", "response"}

    metrics = run.evaluate(progress=False)
    assert metrics["task"] == "clockwork" and metrics["n_forget"] == 12 and metrics["n_retain"] == 10
    for key in ("forget_nll", "forget_rouge", "retain_nll", "retain_rouge"):
        assert isinstance(metrics[key], float) and metrics[key] == metrics[key]
    assert 0 <= metrics["forget_rouge"] <= 1 and metrics["forget_nll"] > 0
    assert json.loads((tmp_path / "gd" / "metrics.json").read_text())["forget_nll"] == metrics["forget_nll"]
    # the suite is a plain function of (model, tokenizer, ctx): the untouched target scores lower NLL on the
    # forget passages than the model that was trained to forget them with gradient difference
    original = geffect.evaluate_task(*geffect.load_model("tiny"), task="clockwork", progress=False)
    assert original["forget_nll"] < metrics["forget_nll"]

    from geffect.cli import main

    assert main(["report", str(tmp_path / "gd"), "--out", str(tmp_path / "report"), "--no-progress"]) == 0
    assert (tmp_path / "report" / "report.html").stat().st_size > 0
    assert main(["compare", str(tmp_path / "gd"), "--out", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "compare.csv").read_text()
    assert "forget_nll" in table and "clockwork" in table


def test_tofu_evaluation_of_a_forget_file_says_which_task_fits(tmp_path):
    from geffect.tasks import evaluate_task

    (tmp_path / "mine.jsonl").write_text('{"question": "Q?", "answer": "A."}\n')
    with pytest.raises(InputError, match="run with task 'files'"):
        evaluate_task(None, None, task="tofu", forget=str(tmp_path / "mine.jsonl"))


def test_diagnose_checks_a_new_objective_on_a_tasks_rows():
    from geffect.objectives import get_objective
    from geffect.reporting.new_objective import check_objective

    loss = check_objective(get_objective("ga").fn, task="clockwork", batch_size=4)
    assert loss == loss and loss < 0  # GA's loss is minus a positive NLL, here on text rows


def test_data_files_and_folders_are_recorded_absolute_so_a_run_finds_them_from_anywhere(tmp_path, monkeypatch):
    from geffect.training.config import UnlearnConfig
    from geffect.training.trainer import _check_same

    (tmp_path / "mine.jsonl").write_text('{"text": "a passage of text"}\n')
    (tmp_path / "tofu_dir").mkdir()
    monkeypatch.chdir(tmp_path)
    mine = str(tmp_path / "mine.jsonl")
    config = UnlearnConfig(objective="ga", forget="mine.jsonl", probes={"mine": "mine.jsonl", "w": "world_facts"})
    resolved = config.resolved()
    assert (resolved.task, resolved.forget, resolved.probes) == ("files", mine, {"mine": mine, "w": "world_facts"})
    tofu = UnlearnConfig(objective="ga", data="tofu_dir", retain="mine.jsonl").resolved()
    assert (tofu.data, tofu.forget, tofu.retain) == (str(tmp_path / "tofu_dir"), "forget10", mine)
    assert UnlearnConfig(objective="ga", data="owner/name").resolved().data == "owner/name"  # a hub id stays
    _check_same(resolved, None, {"forget": "mine.jsonl"}, tmp_path)  # resuming with the same relative file
    with pytest.raises(ConfigError, match="cannot resume"):
        _check_same(resolved, None, {"forget": "other.jsonl"}, tmp_path)


def test_a_task_in_a_python_file_is_found_by_path_and_recorded_absolute(tmp_path, monkeypatch, capsys):
    from geffect.cli import main
    from geffect.training.config import UnlearnConfig

    (tmp_path / "mytasks.py").write_text(
        "from geffect.tasks import Task, register_task\n"
        "def suite(model, tokenizer, ctx):\n    return {'rows': len(ctx.rows(ctx.forget))}\n"
        "LINES = register_task(Task(name='lines', description='my lines', forget='f',\n"
        "                           splits={'f': [{'text': 'one line of text'}]}, evaluate=suite))\n")
    monkeypatch.chdir(tmp_path)
    task = get_task("mytasks.py:LINES")
    assert task.name == "lines" and get_task("mytasks.py:LINES") is task  # imported once, registered once
    config = UnlearnConfig(objective="ga", task="mytasks.py:LINES").resolved()
    assert (config.task, config.forget) == (f"{tmp_path / 'mytasks.py'}:LINES", "f")
    assert main(["tasks", "mytasks.py:LINES"]) == 0 and "lines: my lines" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path.parent)
    assert config.get_task() is task  # the recorded reference works from another directory
    with pytest.raises(UnknownTask, match=r"cannot import task 'mytasks\.py:LINES': no such Python file"):
        get_task("mytasks.py:LINES")
    with pytest.raises(UnknownTask, match="has no attribute 'LINE'"):
        get_task(f"{tmp_path / 'mytasks.py'}:LINE")
