"""Diagnosis sentences, the number tables behind them, run loading, the HTML report and its CLI.

The synthetic runs plant exact facts (``geffect.reporting.synthetic``): retain damage with
40 % + 25 % of the negative retain effect in block.0 and block.1, forget effect carried 75 %
by block.3 + lm_head and dropping to 5 % of its peak at step 18, retain damage constant.
"""

from __future__ import annotations

import base64
import dataclasses
import re

import numpy as np
import pandas as pd
import pytest

from geffect.cli import main
from geffect.reporting import as_run, as_runs, findings, report, tables
from geffect.reporting.diagnosis import (
    concentration,
    decay_step,
    findings_frame,
    fmt,
    layer_span,
    sign_disagreements,
)
from geffect.reporting.synthetic import synthetic_run, write_run_dir


def sentence(found, run, topic):
    matches = [f for f in found if f.run == run and f.topic == topic]
    assert len(matches) == 1, [(f.run, f.topic) for f in found]
    return matches[0]


# --------------------------------------------------------------------------- tables


def test_step_weights_and_cumulative():
    weights = tables.step_weights([0, 2, 4, 10])
    assert weights.tolist() == [2.0, 2.0, 6.0, 2.0]  # last record: median gap
    series = pd.Series([1.0, -1.0, 0.5], index=[0, 1, 2])
    assert tables.cumulative(series).tolist() == [1.0, 0.0, 0.5]
    curve = tables.cumulative_curve(series)
    assert curve.index.tolist() == [0.0, 1.0, 2.0, 3.0] and curve.tolist() == [0.0, 1.0, 0.0, 0.5]


def test_first_step_share_compares_the_first_record_with_the_largest(ga):
    rows = [(step, "forget", i, layer, "gradient", value / 4)
            for step, value in ((0, -0.02), (1, -2.0), (2, 1.0)) for i in range(2) for layer in ("embed", "block.0")]
    effects = pd.DataFrame(rows, columns=["step", "probe", "instance", "layer", "direction", "value"])
    # per step: mean over instances, summed over layers -> -0.01, -1.0, 0.5
    assert tables.first_step_share(effects, "forget") == pytest.approx(0.01)
    assert tables.first_step_share(ga.effects, "forget") == pytest.approx(1.0)  # planted: level until step 18, then 20x smaller
    with pytest.raises(ValueError, match="no non-zero"):
        tables.first_step_share(effects.assign(value=0.0), "forget")


def test_step_windows_and_instance_windows(ga):
    labels = tables.step_windows([0, 1, 2, 3, 4], 2)
    assert labels == {0: "steps 0–2", 1: "steps 0–2", 2: "steps 0–2", 3: "steps 3–4", 4: "steps 3–4"}
    frame = tables.instance_windows(ga.effects, "forget", windows=2)
    assert list(frame["window"].cat.categories) == ["steps 0–14", "steps 15–29"]
    raw = ga.effects.query("probe == 'forget' and direction == 'gradient' and step >= 15 and instance == 2")
    expected = raw.groupby("step")["value"].sum().mean()
    got = frame[(frame["window"] == "steps 15–29") & (frame["instance"] == 2)]["value"].item()
    assert got == pytest.approx(expected)
    with pytest.raises(ValueError, match="windows"):
        tables.step_windows([0, 1], 0)


def test_select_error_names_available(ga):
    with pytest.raises(ValueError, match=r"available \(probe, direction\) pairs: \[\('forget', 'gradient'\)"):
        tables.select(ga.effects, "world", "gradient")


def test_run_summary_matches_planted(ga):
    summary = tables.run_summary(ga.effects, ga.risks)
    assert summary["cumulative_geffect_forget"] == pytest.approx(-4 * (18 + 0.05 * 12))
    assert summary["cumulative_geffect_retain"] == pytest.approx(-0.98 * 30)
    assert summary["retain_per_forget_effect"] == pytest.approx(0.98 * 30 / (4 * 18.6))
    r = np.corrcoef(ga.risks["predicted_change"], ga.risks["risk_after"] - ga.risks["risk"])[0, 1]
    assert summary["first_order_correlation"] == pytest.approx(r)
    assert summary["first_order_pairs"] == len(ga.risks)


# --------------------------------------------------------------------------- diagnosis


def test_fmt():
    assert [fmt(v) for v in (8.0026, -30.0, 100.4, 0.65, -0.000213)] == ["8.00", "-30.0", "100", "0.650", "-0.000213"]


def test_layer_span_and_concentration():
    assert layer_span(["block.1", "block.0", "lm_head", "block.3"]) == "block.0–1, block.3, lm_head"
    assert layer_span(["embed"]) == "embed"
    totals = pd.Series({"block.0": -6.0, "block.1": -3.0, "block.2": 1.0, "lm_head": -1.0})
    found = concentration(totals)
    assert found["layers"] == ["block.0"] and found["share"] == pytest.approx(0.6) and found["reached"]
    assert found["negative_total"] == pytest.approx(-10.0)
    spread = concentration(pd.Series({f"block.{i}": -1.0 for i in range(10)}))
    assert not spread["reached"] and spread["share"] == pytest.approx(0.3) and len(spread["layers"]) == 3
    assert concentration(pd.Series({"block.0": 1.0})) is None


def test_decay_step():
    series = pd.Series([-1.0, -10.0, -8.0, -0.5, -2.0, -0.9, -0.2], index=range(7))
    assert decay_step(series, 0.9) == (1, 5)  # step 4 (-2.0) breaks the bound -1.0 again
    assert decay_step(series, 0.5) == (1, 3)
    assert decay_step(pd.Series([1.0, 2.0]), 0.9) is None
    assert decay_step(pd.Series([-1.0, -5.0, -5.0]), 0.9) is None


def test_findings_planted_structure(ga, wga):
    found = findings([ga, wga])
    where = sentence(found, "ga", "where (retain, G-effect)")
    assert where.sentence == ("By the G-effect, retain damage concentrates in block.0–1 (65 % of the negative "
                              "retain G-effect, total -30.0).")
    assert where.numbers["share"] == pytest.approx(0.65)
    # the update view of the synthetic (plain SGD) run is -lr × the G-effect: same layers, its own sign
    where = sentence(found, "ga", "where (retain, predicted change)")
    assert where.sentence == ("By the predicted risk change, retain damage concentrates in block.0–1 (65 % of the "
                              "retain risk rise the update effect predicts, total 0.300 nats).")
    forget = sentence(found, "ga", "where (forget, G-effect)")
    assert forget.sentence.startswith("By the G-effect, unlearning concentrates in block.3, lm_head (75 %")
    when = sentence(found, "ga", "when (G-effect)")
    assert when.sentence.startswith("The forget G-effect decays by 90 % after step 18 (peak -4.00 at step 0, "
                                    "afterwards ≥ -0.400)")
    assert when.numbers["decay_step"] == 18 and when.numbers["peak"] == pytest.approx(-4.0)
    assert "while retain damage continues (mean retain G-effect -0.980 per step from step 18)" in when.sentence
    when = sentence(found, "ga", "when (predicted change)")
    assert when.sentence.startswith("The forget predicted risk change decays by 90 % after step 18 (peak 0.0400 at "
                                    "step 0, afterwards ≤ 0.00400)")
    order = sentence(found, "ga", "first order")
    r = np.corrcoef(ga.risks["predicted_change"], ga.risks["risk_after"] - ga.risks["risk"])[0, 1]
    assert order.sentence.startswith(f"First-order prediction correlation {r:.2f} over 480 instance-steps")
    assert order.numbers["pearson_r"] == pytest.approx(r)
    retain = ga.risks.query("probe == 'retain'")
    r_retain = np.corrcoef(retain["predicted_change"], retain["risk_after"] - retain["risk"])[0, 1]
    assert 0.5 <= r_retain < 0.9  # the verdict follows the weakest probe, not the overall r
    assert order.sentence.endswith(f"retain {r_retain:.2f}: first-order predictions capture the trend only "
                                   "(weakest: retain).")
    outcome = sentence(found, "ga", "outcome")
    before = ga.risks.query("probe == 'retain' and step == 0")["risk"].mean()
    after = ga.risks.query("probe == 'retain' and step == 29")["risk_after"].mean()
    assert f"retain {fmt(before)} → {fmt(after)} ({fmt(after - before)} ± " in outcome.sentence
    # the observed changes (forget +0.744, retain +0.29 vs +0.06 for wga) rank the runs
    comparison = sentence(found, "all runs", "comparison")
    assert comparison.sentence.startswith("Per unit of forgetting, wga does the least retain damage (observed "
                                          "retain-risk rise / forget-risk rise")
    assert comparison.numbers["ratio_wga"] < 0.5 * comparison.numbers["ratio_ga"]
    assert comparison.numbers["geffect_ratio_wga"] == pytest.approx(0.2 * comparison.numbers["geffect_ratio_ga"])
    assert not [f for f in found if f.topic.startswith(("views disagree", "nothing forgotten"))]
    frame = findings_frame(found)
    assert list(frame.columns) == ["run", "topic", "sentence", "numbers"]
    assert "share = 0.650" in frame.loc[frame["topic"] == "where (retain, G-effect)", "numbers"].iloc[0]


def test_findings_no_decay_and_no_damage():
    run = synthetic_run("flat", decay_step=100, retain_level=-1.0)  # sign flipped: retain improves
    found = findings(run)
    assert sentence(found, "flat", "when (G-effect)").sentence.startswith(
        "The forget G-effect stays above 50 % of its peak")
    # the retain risk fell, so no sentence says where retain damage concentrates ...
    assert not [f for f in found if f.topic.startswith("where (retain")]
    # ... unless there is no measured risk to say so: a bare effects table keeps the sentence
    bare = findings({"flat": run.effects})
    where = sentence(bare, "flat", "where (retain, G-effect)")
    # only final_norm (weight +0.02, flipped to -0.02) is negative now
    assert where.sentence.startswith("By the G-effect, retain damage concentrates in final_norm (100 %")


def test_nothing_forgotten_replaces_where_and_when(ga):
    """Effects of 1e-4 and a forget risk that barely moved: one plain sentence, no concentration claims."""
    quiet = synthetic_run("quiet", lr=1e-5, noise=1e-6)  # forget risk +0.00074 nats in 30 steps
    found = findings({"quiet": quiet})
    topics = [f.topic for f in found]
    assert "nothing forgotten" in topics
    assert not [t for t in topics if t.startswith(("where", "when"))]
    text = sentence(found, "quiet", "nothing forgotten").sentence
    assert text.startswith("Nothing was forgotten at these settings: the mean forget risk went")
    assert "try a larger learning rate (now 1e-05; e.g. 5e-05) or more steps (now 30; e.g. 90)" in text
    # the same run with the changes the planted effects predict does forget
    assert "nothing forgotten" not in [f.topic for f in findings({"ga": ga})]
    # the floor is a parameter: with a 1e-5-nat floor the tiny but consistent rise counts
    assert "nothing forgotten" not in [f.topic for f in findings({"quiet": quiet}, min_change=1e-5)]


def _flip_gradient(run, probe, layers=None):
    """``run`` with the G-effect of ``probe`` negated (in ``layers``, default all): the gradient
    now says the risk falls there while the applied update and the observed change say it rises,
    as RMU's forget probe shows under AdamW."""
    effects = run.effects.copy()
    rows = (effects["probe"] == probe) & (effects["direction"] == "gradient")
    if layers is not None:
        rows &= effects["layer"].isin(layers)
    effects.loc[rows, "value"] *= -1
    return dataclasses.replace(run, effects=effects)


def test_sign_disagreement_whole_model(ga):
    flipped = _flip_gradient(ga, "forget")
    table = sign_disagreements({"flipped": flipped})
    forget = table[table["probe"] == "forget"].set_index("layer")
    assert forget["disagree"].all()  # every layer group and the whole model
    assert set(forget["gradient_says"]) == {"falls"} and set(forget["update_says"]) == {"rises"}
    assert set(forget["supports"]) == {"update"}
    assert not table[table["probe"] == "retain"]["disagree"].any()
    assert forget.loc["all layers", "gradient"] == pytest.approx(-ga.effects.query(
        "probe == 'forget' and direction == 'gradient'").groupby(["step", "layer"])["value"].mean().sum())
    found = sentence(findings({"flipped": flipped}), "flipped", "views disagree (forget)")
    assert found.sentence.startswith("Forget probe, G-effect (negative = risk rises) vs predicted risk change "
                                     "(positive = risk rises): over the whole model the G-effect (")
    assert "says the forget risk falls but the predicted risk change (0.744 nats) says it rises" in found.sentence
    assert "supports the predicted risk change" in found.sentence
    assert found.numbers["whole_model"] and found.numbers["supports"] == "update"
    assert found.numbers["layers"] == "embed, block.0–3, final_norm, lm_head"


def test_sign_disagreement_in_some_layers(ga):
    flipped = _flip_gradient(ga, "retain", ["block.2", "block.3"])
    table = sign_disagreements(flipped).set_index(["probe", "layer"])
    assert table["disagree"].groupby("probe").sum().to_dict() == {"forget": 0, "retain": 2}
    assert table.loc[("retain", "block.2"), "supports"] == "update"
    assert not table.loc[("retain", "all layers"), "disagree"]  # the other layers keep the sum's sign
    found = sentence(findings(flipped), "ga", "views disagree (retain)")
    assert "the views disagree in sign in 2 of 7 layer groups (in block.2–3 the G-effect says it falls, the " \
           "predicted change that it rises)" in found.sentence
    assert not found.numbers["whole_model"]
    # when the observed change is within noise, neither view is supported
    start = flipped.risks.groupby(["probe", "instance"])["risk"].transform("first")
    risks = flipped.risks.assign(risk=start, risk_after=start)
    still = dataclasses.replace(flipped, risks=risks)
    assert set(sign_disagreements(still).query("disagree")["supports"]) == {"neither"}


# --------------------------------------------------------------------------- runs


def test_load_run_dir_parts_and_errors(ga, tmp_path):
    folder = write_run_dir(ga, tmp_path / "run")
    # a second history part with an extra column (a loss part appearing later) must survive
    extra = ga.history.iloc[:2].assign(step=[30, 31], loss_retain=[0.1, 0.2])
    extra.to_parquet(folder / "history.parquet" / "part-000030.parquet", index=False)
    (folder / "history.parquet" / ".part-x.parquet.tmp").write_text("partial")
    run = as_run(folder)
    assert run.name == "ga" and run.config["status"] == "finished"
    assert len(run.history) == 32 and run.history["loss_retain"].notna().sum() == 2
    assert run.texts["retain"].loc[3, "question"] == "Question about retained fact 3?"
    pd.testing.assert_frame_equal(run.effects.reset_index(drop=True), ga.effects)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no effects.parquet records"):
        as_run(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        as_run(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['direction'\]"):
        as_run(ga.effects.drop(columns="direction"))


def test_as_runs_names(ga, tmp_path):
    runs = as_runs({"first": ga, "second": ga})
    assert [r.name for r in runs] == ["first", "second"]
    assert [r.name for r in as_runs([ga, ga])] == ["ga", "ga #2"]
    dirs = [write_run_dir(ga, tmp_path / name) for name in ("ga-lr1", "ga-lr2")]
    assert [r.name for r in as_runs(dirs)] == ["ga-lr1", "ga-lr2"]  # same objective: directory names


def test_as_run_from_run_like_object(ga, tmp_path):
    @dataclasses.dataclass
    class Config:
        objective: str = "pkg.losses:my_loss"
        lr: float = 1e-4

    class RunLike:  # the attributes geffect.training.Run offers
        effects, history, risks = ga.effects, ga.history, ga.risks
        config, metrics, status, path = Config(), {"forget": {"rouge_l": 0.1}}, "finished", tmp_path / "r"

    run = as_run(RunLike())
    assert run.name == "my_loss" and run.objective == "my_loss"
    assert run.config == {"objective": "pkg.losses:my_loss", "lr": 1e-4, "status": "finished"}
    assert run.metrics == {"forget": {"rouge_l": 0.1}} and run.risks is ga.risks
    with pytest.raises(TypeError, match="cannot read a run from int"):
        as_run(3)


# --------------------------------------------------------------------------- report


def test_report_files_and_content(ga, wga, tmp_path):
    folder = write_run_dir(ga, tmp_path / "ga_run")
    path = report([folder, wga], tmp_path / "out", title="synthetic study", progress=False, dpi=50)
    assert path == tmp_path / "out" / "report.html"
    page = path.read_text(encoding="utf-8")
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pngs == ["comparison.png", "cumulative.png", "heatmap_ga.png", "heatmap_wga.png",
                    "instance_distribution.png", "layer_totals.png", "most_damaged_ga.png",
                    "most_damaged_wga.png", "predicted_vs_observed.png"]
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(pngs)
    assert base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert base64.b64decode(images[0]) == (tmp_path / "out" / "cumulative.png").read_bytes()
    assert "negative</b> = the\nprobe's risk rises" in page and "<b>positive</b> = the risk rises" in page
    for found in findings([ga, wga]):  # every diagnosis sentence is on the page
        assert found.sentence in page
    assert "<title>synthetic study</title>" in page and "Run configurations" in page
    assert "<td>Question about retained fact 3?</td>" in page  # most-damaged table with the text
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary["run"].tolist() == ["ga", "wga"]
    assert summary["cumulative_geffect_retain"].tolist() == pytest.approx([-29.4, -5.88])
    assert summary["predicted_change_retain"].tolist() == pytest.approx([0.294, 0.0588])  # -lr × G-effect
    planted = ga.risks.query("probe == 'retain'")
    assert summary["observed_change_retain"][0] == pytest.approx(
        planted.query("step == 29")["risk_after"].mean() - planted.query("step == 0")["risk"].mean())
    assert summary["metric/model_utility"].tolist() == [0.5, 0.5]
    assert summary["status"].fillna("").tolist() == ["finished", ""]
    assert summary["recorded_steps"].tolist() == [30, 15]


def test_report_effects_only_run(ga, tmp_path):
    """A bare effects table (no risks, history, texts) still gives a report without the risk views."""
    path = report({"bare": ga.effects}, tmp_path / "bare", progress=False, dpi=50)
    pngs = sorted(p.name for p in path.parent.glob("*.png"))
    assert "predicted_vs_observed.png" not in pngs and "comparison.png" not in pngs
    assert "heatmap_bare.png" in pngs and "most_damaged_bare.png" in pngs
    assert "First-order prediction correlation" not in path.read_text(encoding="utf-8")


def test_cli_report(ga, tmp_path, capsys):
    folder = write_run_dir(ga, tmp_path / "run")
    assert main(["report", str(folder), "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(tmp_path / "cli" / "report.html")
    assert (tmp_path / "cli" / "summary.csv").exists()
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geffect report: error: run directory") and "does not exist" in err
