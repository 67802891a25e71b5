"""Bad input gets one clear line and the right exit code, before any expensive work (issue #13, 7 and 9-12):
model names, damaged runs in the readers, a diverged model's metrics, exit codes, API checks,
objectives given as path/to/file.py:function."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_training_support import toy_model, use_toy_model, world_tokenizer

import geffect
import geffect.sources
from geffect.cli import main
from geffect.data import collate, encode_qa
from geffect.errors import InputError, ObjectiveError
from geffect.evaluation.metrics import (
    model_utility,
    multiple_choice_probability,
    truth_ratio,
    truth_ratio_score,
)
from geffect.models.loading import resolve
from geffect.training import checkpoint as ckpt
from geffect.training.records import table_path
from geffect.training.run import Run

ARGS = ["--forget", "forget01", "--batch-size", "2", "--probe-size", "2", "--no-progress"]
SHIPPED = "tiny, tiny-retain90, tiny-retain95, tiny-retain99, tiny-reference"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def no_hub(monkeypatch) -> None:
    """The hub is unreachable (as offline); it must not even be asked unless a name could be a hub id."""
    monkeypatch.setattr(geffect.sources, "hub_reachable", lambda *a, **k: False)


def hub_never_asked(monkeypatch) -> None:
    def asked(*_, **__):
        raise AssertionError("the hub was asked about a name that cannot be a hub id")

    monkeypatch.setattr(geffect.sources, "hub_reachable", asked)
    monkeypatch.setattr(geffect.sources, "in_hub_cache", asked)


# -- 7. model and data names ---------------------------------------------------------------------------


def test_shipped_names_and_existing_paths_resolve_without_the_hub(tmp_path, monkeypatch):
    hub_never_asked(monkeypatch)
    assert resolve("tiny").kind == "shipped" and Path(resolve("tiny").location).name == "tiny"
    source = resolve(tmp_path)
    assert source.kind == "path" and source.local_only


@pytest.mark.parametrize("name, message", [
    ("Tiny", f"unknown model 'Tiny' (did you mean 'tiny'?; shipped models: {SHIPPED})"),
    ("./models/mine", "model './models/mine': no such file or directory"),
    ("/nowhere/at/all", "no such file or directory"),
])
def test_names_that_cannot_be_hub_ids_fail_without_asking_the_hub(name, message, monkeypatch):
    hub_never_asked(monkeypatch)
    with pytest.raises(InputError) as info:
        geffect.load_model(name)
    assert message in str(info.value)


def test_a_possible_hub_id_fails_at_once_when_the_hub_is_unreachable(monkeypatch):
    no_hub(monkeypatch)
    with pytest.raises(InputError, match="not reachable") as info:
        geffect.load_model("tiny-retain9")
    assert f"did you mean 'tiny-retain99'?; shipped models: {SHIPPED}" in str(info.value)


@pytest.mark.parametrize("flags, message", [
    (["--model", "nosuchmodel"], "model 'nosuchmodel' is not a shipped model, not an existing path, and the "
                                 "Hugging Face hub is not reachable"),
    (["--data", "mydata/tofu_typo"], "data source 'mydata/tofu_typo' is not an existing path"),
    (["--data", "./mydata/tofu"], "data source './mydata/tofu': no such file or directory"),
])
def test_cli_names_fail_in_one_line_before_loading(flags, message, tmp_path, monkeypatch, capsys):
    no_hub(monkeypatch)
    import geffect.models

    monkeypatch.setattr(geffect.models, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(["unlearn", "--objective", "ga", "--out", str(tmp_path / "r"), *ARGS, *flags]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_unreachable_hub_costs_no_retries(tmp_path):
    """With the hub's endpoint refusing connections (and HF_HUB_OFFLINE unset), unknown names fail in seconds."""
    script = textwrap.dedent("""
        import time
        from geffect.errors import InputError
        from geffect.models import load  # imports torch and transformers before the clock starts
        for name in ("nosuchmodel", "someone/model", "Tiny"):
            start = time.perf_counter()
            try:
                load(name)
            except InputError as err:
                print(f"{time.perf_counter() - start:.2f}", err)
    """)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # the discard port: nothing listens there
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3, out.stdout + out.stderr
    assert all(float(line.split()[0]) < 10 for line in lines), lines
    assert "not reachable" in lines[0] and "not reachable" in lines[1] and "did you mean 'tiny'" in lines[2]


# -- 9. readers: damaged runs are named and skipped; a diverged model gets its metrics --------------------


@pytest.fixture
def two_runs(tmp_path, monkeypatch):
    use_toy_model(monkeypatch)
    for name in ("good", "bad"):
        assert main(["unlearn", "--objective", "ga", "--steps", "2", "--out", str(tmp_path / name), *ARGS]) == 0
    return tmp_path / "good", tmp_path / "bad"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage(run: Path, what: str) -> Path:
    if what == "part":
        target = next(table_path(run, "history").glob("part-*"))
        _truncate(target)
    elif what == "config":
        target = run / "config.yaml"
        target.write_text("objective: [unclosed\n")
    elif what == "status":
        target = run / "run.json"
        target.write_text('{"status": "finished", ')
    else:
        target = ckpt.latest_checkpoint(run)[1] / ckpt.PARAMS_FILE
        _truncate(target)
    return target


@pytest.mark.parametrize("what", ["part", "config", "status"])
def test_compare_names_a_damaged_run_and_compares_the_rest(what, two_runs, tmp_path, capsys):
    good, bad = two_runs
    damaged = _damage(bad, what)
    capsys.readouterr()
    assert main(["compare", str(good), str(bad), "--out", str(tmp_path / "cmp")]) == 0
    err = one_error_line(capsys)
    assert err.startswith(f"geffect compare: skipped {str(bad)!r}: ") and str(damaged) in err
    assert pd.read_csv(tmp_path / "cmp" / "compare.csv")["run"].tolist() == ["good"]
    assert main(["compare", str(bad), "--out", str(tmp_path / "cmp2")]) == 2  # nothing left to compare


@pytest.mark.parametrize("what", ["part", "config", "status"])
def test_report_names_a_damaged_run_and_reports_the_rest(what, two_runs, tmp_path, capsys):
    good, bad = two_runs
    damaged = _damage(bad, what)
    capsys.readouterr()
    assert main(["report", str(good), str(bad), "--out", str(tmp_path / "rep"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and str(damaged) in skipped[0] and "Traceback" not in captured.err
    assert pd.read_csv(tmp_path / "rep" / "summary.csv")["run"].tolist() == ["ga"]


@pytest.mark.parametrize("what", ["checkpoint", "config", "status"])
def test_evaluate_on_a_damaged_run_is_one_line(what, two_runs, capsys):
    _, bad = two_runs
    damaged = _damage(bad, what)
    capsys.readouterr()
    assert main(["evaluate", str(bad), "--max-examples", "2", "--retain-model", "none", "--no-progress"]) == 2
    assert str(damaged) in one_error_line(capsys)


def test_tofu_ratios_are_computed_in_log_space():
    huge = 2000.0  # exp(-2000) underflows to 0: ratios of such probabilities must not become 0/0
    assert multiple_choice_probability([huge], [[huge + 1.0, huge + 1.0]])[0] == pytest.approx(
        1 / (1 + 2 * np.exp(-1.0)))
    assert truth_ratio([huge], [[huge + 1.0, huge + 3.0]], mean="arithmetic")[0] == pytest.approx(
        (np.exp(-1.0) + np.exp(-3.0)) / 2)
    assert np.isnan(truth_ratio_score([0.5, np.nan], "forget")) and np.isnan(model_utility([0.5, np.nan]))
    assert model_utility([0.5, 0.0]) == 0.0


def exploding_ga(model, forget):
    """GA whose second call first wrecks the model's head (infinite logits, so a NaN loss): a diverged run."""
    from geffect.objectives import get_objective

    exploding_ga.calls = getattr(exploding_ga, "calls", 0) + 1
    if exploding_ga.calls >= 2:
        with torch.no_grad():
            model.lm_head.weight.fill_(float("inf"))
    return get_objective("ga")(model, forget)


def test_evaluate_on_a_diverged_run_reports_metrics_with_nan_named(tmp_path, monkeypatch, capsys):
    use_toy_model(monkeypatch)
    exploding_ga.calls = 0
    with pytest.warns(RuntimeWarning, match="non-finite .* at step 1"):
        run = geffect.unlearn(exploding_ga, forget="forget01", steps=3, batch_size=2, probe_size=2,
                              out=tmp_path / "run", progress=False)
    assert run.status == "diverged"
    assert main(["evaluate", str(run.path), "--max-examples", "2", "--retain-model", "none", "--no-progress"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert np.isnan(metrics["forget_prob"]) and np.isnan(metrics["model_utility"])
    assert 0.0 <= metrics["forget_rouge"] <= 1.0  # greedy answers still exist and are scored
    assert {"forget_prob", "model_utility"} <= set(metrics["undefined"])
    assert "undefined (NaN): " in out and "model_utility" in out and "'diverged'" in out


# -- 10. exit codes ------------------------------------------------------------------------------------------

STRING_PART = textwrap.dedent('''
    from geffect.objectives import ObjectiveOutput
    from geffect.objectives.terms import sequence_nll


    def noted(model, forget):
        nll = sequence_nll(model, forget).mean()
        return ObjectiveOutput(loss=-nll, parts={"forget": -nll, "note": "ascent"})


    CALLS = [0]


    def blowup(model, forget):
        """GA whose loss turns NaN from its third call: the dry check and step 0 pass, step 1 diverges."""
        CALLS[0] += 1
        nll = sequence_nll(model, forget).mean()
        return ObjectiveOutput(loss=-nll * (1.0 if CALLS[0] <= 2 else float("nan")), parts={"forget": -nll})
''')


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "objs" / "mine.py"
    path.parent.mkdir()
    path.write_text(STRING_PART)
    return path


def test_a_string_loss_part_is_one_line(user_file, tmp_path, monkeypatch, capsys):
    use_toy_model(monkeypatch)
    assert main(["unlearn", "--objective", f"{user_file}:noted", "--steps", "2", "--out", str(tmp_path / "r"),
                 *ARGS]) == 2
    assert "loss part 'note' must be a number or a scalar tensor, got str 'ascent'" in one_error_line(capsys)
    assert main(["diagnose", f"{user_file}:noted", "--baselines", "", "--steps", "2", "--out",
                 str(tmp_path / "d"), *ARGS]) == 2
    assert "loss part 'note' must be a number" in one_error_line(capsys)


def test_diagnose_exits_3_when_its_objective_diverges(user_file, tmp_path, monkeypatch, capsys):
    use_toy_model(monkeypatch)
    code = main(["diagnose", f"{user_file}:blowup", "--baselines", "", "--steps", "3", "--out",
                 str(tmp_path / "d"), *ARGS])
    assert code == 3
    assert "diverged: blowup" in capsys.readouterr().err
    assert Run(tmp_path / "d" / "runs" / "blowup").status == "diverged"


def test_no_command_is_bad_input(capsys):
    assert main([]) == 2


def test_python_dash_m_geffect_cli_is_the_command_with_its_exit_codes(tmp_path):
    out = subprocess.run([sys.executable, "-m", "geffect.cli", "unlearn", "--objective", "ga", "--lr", "nan",
                          "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2 and out.stderr.strip() == ("geffect unlearn: error: config field 'lr' must be a "
                                                          "finite number, got nan"), out.stderr


def test_readme_has_the_exit_code_table():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for row in ("| 0 | done", "| 1 | bug", "| 2 | bad input", "| 3 | diverged"):
        assert row in readme


# -- 11. the API refuses what it cannot measure ----------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_batch():
    model, tokenizer = toy_model(), world_tokenizer()
    batch = collate([encode_qa(tokenizer, "Who wrote it?", "A fictitious author.")] * 2, tokenizer)
    model.zero_grad()
    geffect.get_objective("ga")(model, batch).loss.backward()
    return model, batch


def test_an_empty_direction_is_an_error_not_zeros(model_and_batch):
    model, batch = model_and_batch
    for empty in ({}, {"lm_head.weight": None}):
        with pytest.raises(ValueError, match="the direction names no parameter"):
            geffect.gradient_effect(model, empty, batch)


def test_numpy_directions_are_accepted_and_other_types_named(model_and_batch):
    model, batch = model_and_batch
    grads = {n: p.grad for n, p in model.named_parameters()}
    as_numpy = {n: g.numpy() for n, g in grads.items()}
    pd.testing.assert_frame_equal(geffect.gradient_effect(model, as_numpy, batch),
                                  geffect.gradient_effect(model, grads, batch))
    with pytest.raises(TypeError, match="direction entry 'lm_head.weight' is a list"):
        geffect.gradient_effect(model, {"lm_head.weight": [[0.0]]}, batch)


def test_batches_without_rows_or_with_unknown_token_ids_are_named(model_and_batch):
    model, batch = model_and_batch
    with pytest.raises(ValueError, match=r"the probe batch has no rows \(input_ids of shape \(0, "):
        geffect.gradient_effect(model, "grad", {k: v[:0] for k, v in batch.items()})
    for key in ("input_ids", "labels"):
        bad = {k: v.clone() for k, v in batch.items()}
        bad[key][1, -1] = 100_000
        with pytest.raises(ValueError, match=f"{key} holds token id 100000 at \\(1, .*vocabulary of 512 ids"):
            geffect.gradient_effect(model, "grad", bad)


# -- 12. path/to/file.py:function wherever an objective is named ------------------------------------------


def test_unlearn_takes_a_file_objective_and_resumes_it_from_elsewhere(user_file, tmp_path, monkeypatch):
    use_toy_model(monkeypatch)
    monkeypatch.chdir(user_file.parent)
    run_dir = tmp_path / "r"
    assert main(["unlearn", "--objective", "mine.py:blowup", "--steps", "1", "--out", str(run_dir), *ARGS]) == 0
    assert Run(run_dir).config.objective == f"{user_file.resolve()}:blowup"
    monkeypatch.chdir(tmp_path)  # the stored absolute path finds the file from anywhere
    assert main(["unlearn", "--resume", "--out", str(run_dir), "--no-progress"]) == 0
    assert main(["unlearn", "--resume", "--out", str(run_dir), "--objective", "objs/mine.py:blowup",
                 "--no-progress"]) == 0  # the same file named from here is the same objective
    run = geffect.unlearn(f"{user_file}:blowup", forget="forget01", steps=1, batch_size=2, probe_size=2,
                          out=tmp_path / "api", progress=False)
    assert run.config.objective == f"{user_file.resolve()}:blowup"


def test_unknown_objective_names_a_close_match(tmp_path, monkeypatch, capsys):
    use_toy_model(monkeypatch)
    assert main(["unlearn", "--objective", "npx", "--out", str(tmp_path / "r"), *ARGS]) == 2
    assert "unknown objective 'npx'" in one_error_line(capsys)
    with pytest.raises(ObjectiveError, match="did you mean 'npo'"):
        geffect.unlearn("npq", out=tmp_path / "r")
