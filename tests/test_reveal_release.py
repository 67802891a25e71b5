"""Reveal and Release: instruction pools, concepts, Reveal on tiny, a 2-iteration end-to-end run, the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import geffect
from geffect.errors import InputError, RunInUseError
from geffect.procedures import RevealRelease, get_concept, list_concepts, reveal_release
from geffect.procedures.concepts import load_instructions
from geffect.procedures.reveal import concept_row, instruction_prompt, reveal
from geffect.procedures.reveal_release import _Procedure
from geffect.training import ConfigError
from geffect.training.claim import claim_run_dir

FAST = dict(iterations=2, rounds=6, k=2, top_instructions=3, completions=8, steps=3, probe_size=8,
            eval_examples=16, batch_size=4, max_new_tokens=20)


@pytest.mark.parametrize("name", ["persons", "toxicity"])
def test_shipped_pools_hold_at_least_40_distinct_instructions(name):
    pool = get_concept(name).pool()
    assert len(pool) >= 40 and len(set(pool)) == len(pool)


def test_bad_pool_files_name_the_line(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text('{"instruction": "a"}\n{"text": "b"}\n')
    with pytest.raises(ValueError, match="line 2: missing"):
        load_instructions(path)
    with pytest.raises(FileNotFoundError, match="no instruction pool"):
        load_instructions("no-such-pool")


def test_unknown_concept_and_bad_settings_fail_before_work(tmp_path):
    with pytest.raises(KeyError, match="known concepts"):
        get_concept("nobody")
    assert "persons" in list_concepts()
    with pytest.raises(ConfigError, match="policy"):
        reveal_release("persons", "tiny", tmp_path / "x", policy="greedy")
    with pytest.raises(ConfigError, match="unknown reveal-release setting"):
        reveal_release("persons", "tiny", tmp_path / "x", rouns=3)
    assert not (tmp_path / "x").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        reveal_release("persons", "tiny", tmp_path / "mine")


def test_rows_and_prompts_follow_the_concept_kind():
    assert concept_row(get_concept("persons"), "Who?", "Ana.") == {"question": "Who?", "answer": "Ana."}
    assert concept_row(get_concept("toxicity"), "They are", "kind.") == {"prompt": "They are", "response": " kind."}
    _, tokenizer = geffect.load_model("tiny")
    assert instruction_prompt(tokenizer, get_concept("persons"), "Who?") == geffect.encode_prompt(tokenizer, "Who?")
    raw = instruction_prompt(tokenizer, get_concept("toxicity"), "They are")
    assert tokenizer.decode(raw, skip_special_tokens=True) == "They are"


def test_reveal_is_seeded():
    model, tokenizer = geffect.load_model("tiny")
    settings = dict(rounds=4, k=2, top_instructions=2, completions=3, max_new_tokens=12, progress=False)
    first = reveal(model, tokenizer, get_concept("persons"), KeywordScorer(), seed=3, **settings)
    again = reveal(model, tokenizer, get_concept("persons"), KeywordScorer(), seed=3, **settings)
    other = reveal(model, tokenizer, get_concept("persons"), KeywordScorer(), seed=4, **settings)
    pd.testing.assert_frame_equal(first.completions, again.completions)
    assert not first.completions.equals(other.completions)


class KeywordScorer:
    """A scorer for tests: 1 when the text holds 'was born', else 0."""

    def score(self, texts):
        return [float("was born" in t) for t in texts]


def test_reveal_keeps_concept_completions_as_forget_and_clean_ones_as_retain():
    model, tokenizer = geffect.load_model("tiny")
    result = reveal(model, tokenizer, get_concept("persons"), KeywordScorer(), rounds=6, k=2, top_instructions=3,
                    completions=6, max_new_tokens=16, progress=False)
    assert len(result.rounds) == 6 and result.best_reward == result.instructions["mean_reward"].max()
    table = result.completions
    assert set(table.loc[table["kept"] == "forget", "score"]) <= {1.0}
    assert set(table.loc[table["kept"] == "retain", "score"]) <= {0.0}
    answers = [r["answer"] for r in result.forget_rows]
    assert len(answers) == len(set(answers)) and all("was born" in a for a in answers)


@pytest.mark.slow
def test_two_iterations_end_to_end_on_tiny_with_resume_and_cli(tmp_path):
    out = tmp_path / "rr"
    result = reveal_release("persons", "tiny", out, progress=False, **FAST)
    assert result.status == "finished" and result.info["iterations"] == 2
    summary = result.summary
    assert list(summary["iteration"]) == [0, 1, 2]
    assert {"author_rouge", "world_facts_rouge", "best_reward", "forget_rows"} <= set(summary.columns)
    runs = result.runs
    assert [r.status for r in runs] == ["finished", "finished"]
    assert runs[1].config.lora_stack == ["../../iter-01/release"] and runs[0].config.lora_stack is None
    effects = runs[1].effects
    assert {"forget", "true_forget", "retain"} <= set(effects["probe"])
    assert runs[1].history["loss_orthogonality"].iloc[0] > 0  # the second module is held orthogonal
    forget = pd.read_json(out / "iter-01" / "reveal" / "forget.jsonl", lines=True)
    assert len(forget) == summary["forget_rows"][1]
    assert len(result.rounds) == 2 * FAST["rounds"]
    # resuming a finished procedure redoes nothing and changes nothing
    before = (out / "summary.csv").read_text()
    again = reveal_release("persons", "tiny", out, resume=True, progress=False, **FAST)
    assert (out / "summary.csv").read_text() == before and again.status == "finished"
    with pytest.raises(ConfigError, match="different settings"):
        reveal_release("persons", "tiny", out, resume=True, progress=False, **{**FAST, "steps": 4})
    with pytest.raises(ConfigError, match="already holds"):
        reveal_release("persons", "tiny", out, progress=False, **FAST)
    # the CLI continues it too, and reports
    cli = subprocess.run([sys.executable, "-c", "import sys; from geffect.cli import main; sys.exit(main())",
                          "reveal-release", "--out", str(out), "--resume", "--no-progress"],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert "status: finished" in cli.stdout
    assert json.loads((out / "status.json").read_text())["status"] == "finished"
    assert isinstance(RevealRelease(out).baseline["author_rouge"], float)


def test_procedure_stops_when_the_best_reward_falls_under_the_threshold(tmp_path):
    result = reveal_release("persons", "tiny", tmp_path / "rr", progress=False,
                            **{**FAST, "rounds": 3, "eval_examples": 4, "stop_reward": 1.5})
    assert result.status == "stopped" and result.info["iterations"] == 0
    assert "under 1.5" in result.info["message"]
    assert result.runs == [] and list(result.summary["iteration"]) == [0, 1]
    assert (tmp_path / "rr" / "iter-01" / "reveal" / "forget.jsonl").is_file()


def _procedure_in_child(out: Path, settings: dict) -> int:
    """Fork a process that starts a procedure in ``out`` whose work lasts until the test kills it."""
    pid = os.fork()
    if pid == 0:  # child: exit without cleanup, as a killed process would
        try:
            _Procedure.run = lambda self: time.sleep(60)
            reveal_release("persons", "tiny", out, progress=False, **settings)
        finally:
            os._exit(1)
    return pid


def _wait_until_claimed(out: Path, pid: int) -> None:
    """Wait until process ``pid`` holds ``out`` and has saved the procedure's config."""
    deadline = time.time() + 60
    while time.time() < deadline:
        status = out / "status.json"
        owner = json.loads(status.read_text()).get("owner", {}) if status.is_file() else {}
        if owner.get("pid") == pid and (out / "reveal_release.yaml").is_file():
            return
        assert os.waitpid(pid, os.WNOHANG) == (0, 0), "the holding procedure ended early"
        time.sleep(0.02)
    raise AssertionError(f"process {pid} did not claim {out} in 60 s")


def test_a_live_procedure_refuses_a_second_one_before_any_work_and_resumes_once_killed(tmp_path, monkeypatch):
    import geffect.models

    def refuse(*_, **__):
        raise AssertionError("a refused procedure loaded a model")

    out = tmp_path / "rr"
    settings = {**FAST, "rounds": 3, "eval_examples": 4, "stop_reward": 1.5}
    pid = _procedure_in_child(out, settings)
    try:
        _wait_until_claimed(out, pid)
        held = sorted(p.name for p in out.iterdir())
        with monkeypatch.context() as patch:
            patch.setattr(geffect.models, "load", refuse)
            for resume in (True, False):  # the live holder is named whether or not the second one resumes
                with pytest.raises(RunInUseError,
                                   match=rf"{re.escape(repr(str(out)))} is in use by a live run \(pid {pid} on host"):
                    reveal_release("persons", "tiny", out, resume=resume, progress=False, **settings)
        assert sorted(p.name for p in out.iterdir()) == held  # the refused procedures wrote nothing
        assert json.loads((out / "status.json").read_text())["owner"]["pid"] == pid
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    result = reveal_release("persons", "tiny", out, resume=True, progress=False, **settings)
    assert result.status == "stopped" and result.info["owner"]["pid"] == os.getpid()  # status kept the owner
    with pytest.raises(InputError, match="is not a geffect run directory"):
        claim_run_dir(out, resume=True)  # the procedure's folder is not taken for an unlearning run's


def test_the_configured_threshold_decides_what_is_forget_data(tmp_path):
    # the tagger scores at most 1, so a threshold of 1.5 keeps no completion as forget data
    result = reveal_release("persons", "tiny", tmp_path / "rr", progress=False,
                            **{**FAST, "rounds": 3, "eval_examples": 4, "threshold": 1.5, "clean_threshold": 1.5})
    assert result.status == "stopped" and "no completion held the concept" in result.info["message"]
    table = pd.read_csv(tmp_path / "rr" / "iter-01" / "reveal" / "completions.csv")
    kept = set(table["kept"].fillna(""))
    assert "forget" not in kept and "retain" in kept  # every completion scores under 1.5: clean


def test_release_settings_and_the_model_are_checked_before_any_work(tmp_path, monkeypatch, capsys):
    import geffect.models
    from geffect.cli import main
    from geffect.errors import InputError

    def refuse(*_, **__):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(geffect.models, "load", refuse)
    out = tmp_path / "rr"
    for settings, message in [({"lr": float("nan")}, "'lr' must be a finite number"),
                              ({"run_settings": {"flush_evry": 2}}, r"unknown config field\(s\) \['flush_evry'\]"),
                              ({"model": "Tiny"}, "did you mean 'tiny'")]:
        with pytest.raises(InputError, match=message):
            reveal_release("persons", out=out, progress=False, **settings)
    assert main(["reveal-release", "--concept", "persons", "--out", str(out), "--lr", "inf"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'lr' must be a finite number, got inf" in err
    assert not out.exists()


def test_a_diverged_release_stops_the_procedure_and_exits_3(tmp_path, capsys):
    from geffect.cli import main

    out = tmp_path / "rr"
    settings = ["--iterations", "2", "--rounds", "3", "--steps", "3", "--lr", "1e30", "--eval-examples", "4",
                "--set", "k=2", "--set", "completions=8", "--set", "top_instructions=3", "--set", "max_new_tokens=20",
                "--set", "probe_size=8", "--set", "batch_size=4", "--no-progress"]
    with pytest.warns(RuntimeWarning, match="non-finite"):
        code = main(["reveal-release", "--concept", "persons", "--out", str(out), *settings])
    assert code == 3
    result = RevealRelease(out)
    assert result.status == "diverged" and result.info["iterations"] == 0
    assert "iteration 1: the release run" in result.info["message"] and [r.status for r in result.runs] == ["diverged"]
    assert "status: diverged" in capsys.readouterr().out
    assert main(["reveal-release", "--out", str(out), "--resume", "--no-progress"]) == 3  # nothing redone


@pytest.mark.parametrize("name", ["persons", "toxicity"])
def test_every_release_and_the_true_forget_run_share_the_probe_rows(tmp_path, name):
    from geffect.procedures.reveal_release import RevealReleaseConfig, _Procedure, fixed_probes

    config = RevealReleaseConfig(concept=name, probe_size=5, seed=2)
    procedure = _Procedure(config, tmp_path / "rr", progress=False)
    first = procedure.release_config(1, tmp_path / "rr" / "iter-01").probes
    second = procedure.release_config(2, tmp_path / "rr" / "iter-02").probes
    assert first["true_forget"] == second["true_forget"] and first["retain"] == second["retain"]
    rows = pd.read_json(first["true_forget"], lines=True)
    fields = {"question", "answer"} if get_concept(name).kind == "qa" else {"prompt", "response"}
    assert len(rows) == 5 and set(rows.columns) == fields
    written = (tmp_path / "rr" / "probes" / "true_forget.jsonl").read_text()
    elsewhere = fixed_probes(config, tmp_path / "other")  # the same seed and size: the same rows
    assert (tmp_path / "other" / "true_forget.jsonl").read_text() == written
    assert fixed_probes(RevealReleaseConfig(concept=name, probe_size=5, seed=3), tmp_path / "third")
    assert (tmp_path / "third" / "true_forget.jsonl").read_text() != written
    assert elsewhere["retain"].endswith("retain.jsonl")
