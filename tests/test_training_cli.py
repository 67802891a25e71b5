"""`geffect unlearn / evaluate / compare`: a run end to end, and one clear line for user errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_training_support import toy_model, use_toy_model, world_tokenizer

from geffect.cli import main
from geffect.training.run import Run

ARGS = ["--forget", "forget01", "--steps", "2", "--batch-size", "2", "--probe-size", "2", "--no-progress"]


def test_unlearn_then_compare(tmp_path, monkeypatch, capsys):
    use_toy_model(monkeypatch)
    for objective, extra in (("ga", []), ("npo", ["--hparam", "beta=0.5", "--probe", "facts=world_facts"])):
        code = main(["unlearn", "--objective", objective, "--out", str(tmp_path / objective), *ARGS, *extra])
        assert code == 0
    out = capsys.readouterr().out
    assert "status: finished" in out and "final loss" in out
    npo = Run(tmp_path / "npo")
    assert npo.config.hparams == {"beta": 0.5} and set(npo.effects["probe"]) == {"facts"}
    assert main(["compare", str(tmp_path / "ga"), str(tmp_path / "npo"), "--out", str(tmp_path / "cmp")]) == 0
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert table["objective"].tolist() == ["ga", "npo"]
    ga = Run(tmp_path / "ga")
    # the cumulative G-effect is the sum over steps of the per-step mean over instances
    per_step = ga.effects.query("probe == 'forget' and direction == 'gradient'").groupby(["step", "instance"])["value"].sum()
    assert table.loc[0, "g_effect_forget"] == pytest.approx(per_step.groupby(level="step").mean().sum())
    assert table.loc[0, "risk_forget_end"] == pytest.approx(ga.risks.query("probe == 'forget' and step == 1")["risk_after"].mean())
    assert (tmp_path / "cmp" / "compare.md").read_text().startswith("| run | objective |")


def test_evaluate_writes_metrics(tmp_path, monkeypatch, capsys):
    use_toy_model(monkeypatch)
    assert main(["unlearn", "--objective", "ga", "--out", str(tmp_path / "run"), *ARGS]) == 0
    assert main(["evaluate", str(tmp_path / "run"), "--max-examples", "2", "--retain-model", "none",
                 "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"forget_rouge", "retain_rouge", "model_utility", "objective"} <= set(metrics)
    assert "forget_quality" not in metrics and 0 <= metrics["forget_rouge"] <= 1


@pytest.mark.parametrize("argv, message", [
    (["unlearn", "--objective", "gax"], "unknown objective 'gax'"),
    (["unlearn", "--objective", "ga", "--forget", "forget11"], "no split 'forget11'"),
    (["unlearn", "--objective", "ga", "--set", "optimizer=adam"], "'optimizer' must be one of"),
    (["unlearn", "--objective", "ga", "--hparam", "beta"], "not of the form NAME=VALUE"),
    (["unlearn"], "--objective is required"),
    (["evaluate", "nowhere"], "not a geffect run directory"),
])
def test_user_errors_are_one_line(argv, message, tmp_path, monkeypatch, capsys):
    use_toy_model(monkeypatch)
    assert main([*argv, *(["--out", str(tmp_path / "x")] if argv[0] == "unlearn" else [])]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_model_tokenizer_mismatch_is_one_line(tmp_path, monkeypatch, capsys):
    import geffect.models

    def mismatched(name, device=None, dtype=None, **_):
        model = toy_model()
        model.resize_token_embeddings(100)  # fewer rows than the tokenizer has tokens
        return model, world_tokenizer()

    monkeypatch.setattr(geffect.models, "load", mismatched)
    assert main(["unlearn", "--objective", "ga", "--out", str(tmp_path / "x"), *ARGS]) == 2
    err = capsys.readouterr().err
    assert "model/tokenizer mismatch" in err and len(err.strip().splitlines()) == 1


def test_existing_run_needs_resume(tmp_path, monkeypatch, capsys):
    use_toy_model(monkeypatch)
    assert main(["unlearn", "--objective", "ga", "--out", str(tmp_path / "r"), *ARGS]) == 0
    assert main(["unlearn", "--objective", "ga", "--out", str(tmp_path / "r"), *ARGS]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["unlearn", "--out", str(tmp_path / "r"), "--resume", "--lr", "0.5"]) == 2
    assert "different settings (lr" in capsys.readouterr().err
    assert main(["unlearn", "--out", str(tmp_path / "r"), "--resume", "--no-progress"]) == 0  # finished: no-op
    assert Run(tmp_path / "r").history["step"].tolist() == [0, 1]
