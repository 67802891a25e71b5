"""The step loop on a toy world model: record shapes, exact values, risk bookkeeping, failure modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_training_support import instance_risk, oracle_values, toy_load, use_toy_model

from geffect.errors import InputError
from geffect.objectives import ObjectiveOutput, get_objective
from geffect.objectives.terms import sequence_nll
from geffect.tasks import TaskData
from geffect.training.config import ConfigError, UnlearnConfig
from geffect.training.data import UnlearningData
from geffect.training.run import Run
from geffect.training.trainer import Trainer, unlearn

SMALL = dict(forget="forget01", batch_size=4, probe_size=3, steps=4, seed=5)


def run_toy(tmp_path, monkeypatch, objective="ga", **fields) -> Run:
    use_toy_model(monkeypatch)
    config = UnlearnConfig(objective=objective if isinstance(objective, str) else "x", **{**SMALL, **fields})
    fn = None if isinstance(objective, str) else objective
    if fn is not None:
        from geffect.training.trainer import resolve_objective

        config.objective = resolve_objective(fn)[1]
    return Trainer(config.resolved(), tmp_path / "run", objective_fn=fn, progress=False).run()


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    try:
        yield run_toy(tmp_path_factory.mktemp("sgd"), monkeypatch, optimizer="sgd", lr=0.5, checkpoint_every=2)
    finally:
        monkeypatch.undo()


def test_tables_have_the_contract_shape(sgd_run):
    effects, history, risks = sgd_run.effects, sgd_run.history, sgd_run.risks
    assert list(effects.columns) == ["step", "probe", "instance", "layer", "direction", "value"]
    groups = ["embed", "block.0", "block.1", "final_norm", "lm_head"]
    # 4 steps x 2 probes x 3 instances x 5 groups x 2 directions
    assert len(effects) == 4 * 2 * 3 * 5 * 2
    assert list(effects[effects.step == 0]["layer"].unique()) == groups
    assert set(effects["direction"]) == {"gradient", "update"}
    assert history["step"].tolist() == [0, 1, 2, 3]
    for column in ("loss", "loss_forget", "grad_norm", "lr", "risk_forget", "risk_retain",
                   "risk_change_forget", "risk_change_retain"):
        assert column in history.columns and history[column].notna().all(), column
    assert list(risks.columns) == ["step", "probe", "instance", "risk", "risk_after", "predicted_change"]
    assert len(risks) == 4 * 2 * 3
    assert sgd_run.status == "finished" and sgd_run.info["step"] == 4


def test_gradient_effects_equal_an_independent_oracle(sgd_run):
    """Step 0: rebuild θ_0, the forget batch and GA's gradient by hand; compare every value."""
    model, tokenizer = toy_load()
    data = UnlearningData(tokenizer, TaskData(), "forget01", None, seed=5, batch_size=4)
    loss = -sequence_nll(model, data.forget_batch(0)).mean()
    params = dict(model.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    recorded = sgd_run.effects.query("step == 0 and direction == 'gradient'")
    groups = list(recorded["layer"].unique())
    for probe, split in (("forget", "forget01"), ("retain", "retain99")):
        batch = data.probe(probe, split, 3).batch
        expected = oracle_values(model, batch, grads, groups)
        got = recorded[recorded.probe == probe]["value"].to_numpy().reshape(3, len(groups))
        assert torch.allclose(torch.tensor(got), expected, rtol=1e-5, atol=1e-9)
        assert expected.abs().max() > 1e-6  # not trivially zero
    # GA raises the forget risk: its gradient has a negative inner product with ∇R on forget
    assert recorded[recorded.probe == "forget"].groupby("instance")["value"].sum().lt(0).all()


def test_sgd_update_effect_is_minus_lr_times_gradient_effect(sgd_run):
    """SGD: Δθ = -lr·g, and both are measured at θ_s, so update = -lr x gradient effect."""
    effects = sgd_run.effects.set_index(["step", "probe", "instance", "layer", "direction"])["value"]
    grad = effects.xs("gradient", level="direction")
    update = effects.xs("update", level="direction")
    assert (update + 0.5 * grad).abs().max() <= 1e-4 * grad.abs().max()


def test_clipping_leaves_the_recorded_gradient_unclipped(tmp_path, monkeypatch):
    """With clipping the update is -lr·c·g (c < 1) while the gradient direction stays g itself."""
    plain = run_toy(tmp_path / "plain", monkeypatch, optimizer="sgd", lr=0.5, steps=1)
    clipped = run_toy(tmp_path / "clipped", monkeypatch, optimizer="sgd", lr=0.5, steps=1, max_grad_norm=0.01)
    norm = float(clipped.history["grad_norm"].iloc[0])
    assert norm > 0.01  # clipping really happens
    keys = ["probe", "instance", "layer"]

    def values(run, direction):
        return run.effects.query(f"direction == '{direction}'").set_index(keys)["value"]

    assert np.allclose(values(clipped, "gradient"), values(plain, "gradient"), rtol=1e-9, atol=0)
    expected = -0.5 * (0.01 / norm) * values(clipped, "gradient")
    assert (values(clipped, "update") - expected).abs().max() <= 1e-3 * expected.abs().max()


def test_risks_chain_and_first_order_prediction(sgd_run):
    risks = sgd_run.risks.set_index(["probe", "instance", "step"]).sort_index()
    # the risk before step s+1 is the risk after step s (θ_{s+1} measured twice, via two paths)
    for _key, frame in risks.groupby(level=[0, 1]):
        before, after = frame["risk"].to_numpy()[1:], frame["risk_after"].to_numpy()[:-1]
        assert before == pytest.approx(after, rel=1e-6)
    # step 0's risks are R_i of the initial model
    model, tokenizer = toy_load()
    data = UnlearningData(tokenizer, TaskData(), "forget01", None, seed=5, batch_size=4)
    probe = data.probe("forget", "forget01", 3)
    with torch.no_grad():
        r0 = [float(instance_risk(model, probe.batch, i)) for i in range(3)]
    assert risks.xs(("forget", 0), level=["probe", "step"])["risk"].tolist() == pytest.approx(r0, rel=1e-6)
    # history means agree with the per-instance table
    history = sgd_run.history.set_index("step")
    mean_change = (risks["risk_after"] - risks["risk"]).xs("retain", level="probe").groupby(level="step").mean()
    assert history["risk_change_retain"].to_numpy() == pytest.approx(mean_change.to_numpy(), rel=1e-9)
    # the first-order prediction tracks the observed change
    observed = risks["risk_after"] - risks["risk"]
    assert np.corrcoef(observed.to_numpy(), risks["predicted_change"].to_numpy())[0, 1] > 0.9


def test_run_model_holds_the_final_parameters(sgd_run):
    model = sgd_run.model
    start, _ = toy_load()
    changed = [n for (n, p), q in zip(model.named_parameters(), start.parameters()) if not torch.equal(p, q)]
    assert changed  # the run changed the model
    forget = sgd_run.risks.query("probe == 'forget' and step == 3")
    data = UnlearningData(sgd_run.tokenizer, TaskData(), "forget01", None, seed=5)
    batch = data.probe("forget", "forget01", 3).batch
    with torch.no_grad():
        final = [float(instance_risk(model, batch, i)) for i in range(3)]
    assert final == pytest.approx(forget["risk_after"].tolist(), rel=1e-6)


def test_record_every_and_directions(tmp_path, monkeypatch):
    run = run_toy(tmp_path, monkeypatch, steps=5, record_every=2, directions=["gradient"], probes={"facts": "world_facts"})
    assert sorted(run.effects["step"].unique()) == [0, 2, 4]
    assert set(run.effects["direction"]) == {"gradient"} and set(run.effects["probe"]) == {"facts"}
    assert run.risks["predicted_change"].isna().all() and run.risks["risk_after"].notna().all()
    assert run.history["risk_facts"].notna().tolist() == [True, False, True, False, True]
    assert run.history["loss"].notna().all() and len(run.history) == 5


def test_objective_weights_and_parts_are_logged(tmp_path, monkeypatch):
    run = run_toy(tmp_path, monkeypatch, objective="wga", steps=2, record_every=0)
    assert {"loss_forget", "loss_token_weight"} <= set(run.history.columns)
    assert run.effects.empty and run.history["loss_token_weight"].between(0, 1).all()


def test_non_finite_loss_stops_and_marks_the_run(tmp_path, monkeypatch):
    calls = []

    def explodes_at_step_2(model, forget):
        calls.append(1)
        out = get_objective("ga")(model, forget)
        bad = torch.tensor(float("nan")) if len(calls) == 3 else torch.tensor(0.0)
        return ObjectiveOutput(loss=out.loss + bad, parts={"forget": out.parts["forget"], "blowup": bad})

    with pytest.warns(RuntimeWarning, match="non-finite loss part 'blowup' at step 2"):
        run = run_toy(tmp_path, monkeypatch, objective=explodes_at_step_2, steps=6)
    assert run.status == "diverged" and "step 2" in run.info["message"]
    assert run.history["step"].tolist() == [0, 1, 2]  # the failing step's losses are kept
    assert torch.isnan(torch.tensor(run.history["loss"].iloc[2]))
    assert sorted(run.effects["step"].unique()) == [0, 1]
    assert run.risks.query("step == 1")["risk_after"].notna().all()  # completed at θ_2


def test_exception_marks_the_run_failed(tmp_path, monkeypatch):
    def broken(model, forget):
        raise RuntimeError("objective bug")

    with pytest.raises(RuntimeError, match="objective bug"):
        run_toy(tmp_path, monkeypatch, objective=broken)
    assert Run(tmp_path / "run").status == "failed"
    assert "objective bug" in Run(tmp_path / "run").info["message"]


def test_clear_errors_before_training(tmp_path, monkeypatch):
    use_toy_model(monkeypatch)
    with pytest.raises(InputError, match="unknown objective 'gax'"):
        unlearn("gax", out=tmp_path / "a")
    with pytest.raises(InputError, match="no split 'forget11'"):
        unlearn("ga", forget="forget11", out=tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="needs retain data"):
        unlearn("gd", forget="world_facts", out=tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match="no hyper-parameter"):
        unlearn("npo", hparams={"betta": 1.0}, out=tmp_path / "d")


def test_lora_trains_only_adapters_and_run_model_reloads_them(tmp_path, monkeypatch):
    run = run_toy(tmp_path, monkeypatch, steps=2, lora={"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]})
    assert set(run.effects["layer"]) == {"block.0", "block.1"}  # adapters live in the blocks only
    model = run.model
    names = [n for n, _ in model.named_parameters()]
    assert any("lora_A" in n for n in names)
    base, _ = toy_load()
    base_params = dict(base.named_parameters())
    for name, param in model.named_parameters():
        plain = name.replace("base_model.model.", "").replace(".base_layer", "")
        if "lora_" not in name:
            assert torch.equal(param, base_params[plain]), name  # frozen
    data = UnlearningData(run.tokenizer, TaskData(), "forget01", None, seed=5)
    batch = data.probe("forget", "forget01", 3).batch
    with torch.no_grad():
        final = [float(instance_risk(model, batch, i)) for i in range(3)]
    assert final == pytest.approx(run.risks.query("probe == 'forget' and step == 1")["risk_after"].tolist(), rel=1e-6)


def test_trainable_patterns_and_gradient_checkpointing(tmp_path, monkeypatch):
    plain = run_toy(tmp_path / "a", monkeypatch, steps=2, trainable=[r"layers\.1\.mlp"])
    assert set(plain.effects["layer"]) == {"block.1"}
    checkpointed = run_toy(tmp_path / "b", monkeypatch, steps=2, trainable=[r"layers\.1\.mlp"],
                           gradient_checkpointing=True)
    np.testing.assert_allclose(checkpointed.effects["value"], plain.effects["value"], rtol=1e-5, atol=1e-10)
    with pytest.raises(ConfigError, match="no parameter is trainable"):
        run_toy(tmp_path / "c", monkeypatch, trainable=["nothing-matches"])


def test_steady_heap_freezes_what_exists_and_still_collects_new_cycles():
    import gc
    import weakref

    from geffect.training.heap import steady_heap

    class Node:
        pass

    assert gc.get_freeze_count() == 0
    with steady_heap():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with steady_heap():  # nested: left as it is
            assert gc.get_freeze_count() == frozen
        cycle = Node()
        cycle.self = cycle
        alive = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert alive() is None  # a cycle made inside the run is still collected
    assert gc.get_freeze_count() == 0
