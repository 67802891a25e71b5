"""Weight controllers: the hypergradient against a finite difference of M after a real SGD step, the
update rules on hand-built signals, and the companion inside the trainer (held-out validation rows,
weights in the history, exact resume)."""

from __future__ import annotations

import copy
import math
import textwrap

import numpy as np
import pytest
import torch
from test_training_support import use_toy_model
from toy_models import make_batch, make_model

from geffect.objectives import get_objective
from geffect.reporting import plots as plot
from geffect.tasks import TaskData
from geffect.training.companions import (
    Companion,
    CompanionContext,
    build_companion,
    list_companions,
)
from geffect.training.config import ConfigError, UnlearnConfig
from geffect.training.controllers import (
    Bandit,
    Hypergradient,
    MetaSignal,
    WeightControl,
    list_controllers,
    term_gradients,
)
from geffect.training.data import UnlearningData
from geffect.training.recording import instance_risks
from geffect.training.run import Run
from geffect.training.trainer import Trainer


# ------------------------------------------------------------------------------ the hypergradient
def validation_objective(model, val, gamma):
    with torch.no_grad():
        return float(instance_risks(model, val["retain"]).mean() - gamma * instance_risks(model, val["forget"]).mean())


def test_hypergradient_matches_finite_difference_after_one_sgd_step():
    """∂M(θ')/∂w_j from the engine equals (M(θ'(w + εe_j)) − M(θ'(w − εe_j)))/2ε, θ' a real SGD step.

    GPT-2 in float64: Hugging Face's Llama computes RMSNorm in float32 whatever the model's dtype,
    which puts a ~1e-7 relative floor under M and hides the O(η) first-order signal of a small step.
    """
    torch.manual_seed(0)
    model = make_model("gpt2", dtype=torch.float64)
    ref = copy.deepcopy(model)
    with torch.no_grad():  # away from the reference, so the retain term has a gradient too
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    forget, retain = make_batch(4, seed=1), make_batch(4, seed=2)
    val = {"forget": make_batch(5, seed=3), "retain": make_batch(5, seed=4)}
    spec = get_objective("meta_cosine_rmu")
    weights = {"forget_weight": 0.7, "retain_weight": 1.3}
    lr, gamma = 1e-5, 0.5
    hparams = spec.hparams(layer=0, gamma=gamma, **weights)

    control = WeightControl(spec, hparams)
    control.set_validation(val["forget"], val["retain"])
    control.start(CompanionContext(model))
    signal = control.measure(0, lr, lambda: spec(model, forget, retain, ref, **hparams))
    assert signal.objective == pytest.approx(validation_objective(model, val, gamma), rel=1e-12)

    def m_after_step(w: dict[str, float]) -> float:
        stepped = copy.deepcopy(model)
        optimizer = torch.optim.SGD(stepped.parameters(), lr=lr)
        optimizer.zero_grad()
        spec(stepped, forget, retain, ref, **{**hparams, **w}).loss.backward()
        optimizer.step()
        return validation_objective(stepped, val, gamma)

    eps = 1e-3
    for term, name in spec.weights.items():
        plus = m_after_step({**weights, name: weights[name] + eps})
        minus = m_after_step({**weights, name: weights[name] - eps})
        finite = (plus - minus) / (2 * eps)
        got = signal.hypergradient[term]
        assert abs(finite) > 1e-9, term  # a real signal, not two zeros
        assert abs(got - finite) <= 1e-3 * abs(finite), (term, got, finite)
    control.close()


def test_term_gradients_are_the_gradients_of_each_part():
    model = make_model("llama", dtype=torch.float64)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.add_(0.1)
    forget, retain = make_batch(3, seed=1), make_batch(3, seed=2)
    out = get_objective("cosine_rmu")(model, forget, retain, ref, layer=0)
    grads = term_gradients(out, ["forget", "retain"], model)
    params = dict(model.named_parameters())
    for term in ("forget", "retain"):
        value = get_objective("cosine_rmu")(model, forget, retain, ref, layer=0).parts[term]
        expected = torch.autograd.grad(value, list(params.values()), allow_unused=True)
        for (name, _), g in zip(params.items(), expected):
            if g is None:
                assert name not in grads[term]
            else:
                assert torch.allclose(grads[term][name], g)
    assert all(p.grad is None for p in model.parameters())  # .grad untouched
    with pytest.raises(ValueError, match="no tensor term 'kl'"):
        term_gradients(out, ["kl"], model)


# ------------------------------------------------------------------------------ the rules
def signal(objective: float, hyper: dict[str, float] | None = None) -> MetaSignal:
    return MetaSignal(step=0, lr=1.0, objective=objective, risks={}, hypergradient=hyper)


def test_hypergradient_rule_on_hand_built_signal():
    rule = Hypergradient({"meta_lr": 2.0}, {"forget": 1.0, "retain": 3.0})
    new = rule.update({"forget": 1.0, "retain": 3.0}, signal(0.0, {"forget": 0.1, "retain": -0.2}))
    raw = {"forget": math.exp(-0.2), "retain": 3.0 * math.exp(0.4)}
    total = raw["forget"] + raw["retain"]
    assert new == pytest.approx({k: 4.0 * v / total for k, v in raw.items()})
    assert sum(new.values()) == pytest.approx(4.0)  # renormalised to the starting total
    assert new["retain"] / new["forget"] > 3.0  # M falls as w_retain rises: retain gains weight


def test_bandit_plays_every_arm_then_ucb():
    rule = Bandit({"grid": [0.1, 1.0, 10.0], "exploration": 0.5}, {"forget": 1.0, "retain": 1.0})
    weights = {"forget": 1.0, "retain": 1.0}
    chosen = []
    for m in (1.0, 0.8, 0.7, 0.65):  # rewards 0.2 (arm 0), 0.1 (arm 1), 0.05 (arm 2)
        weights = rule.update(weights, signal(m))
        chosen.append(weights["retain"])
    assert chosen[:3] == [0.1, 1.0, 10.0]
    # all played once, scale 0.2: scores 1 + b, 0.5 + b, 0.25 + b -> arm 0
    assert chosen[3] == 0.1 and weights["forget"] == 1.0
    weights = rule.update(weights, signal(0.75))  # arm 0 now rewarded -0.1
    bonus = [0.5 * math.sqrt(2 * math.log(4) / n) for n in (2, 1, 1)]
    scores = [0.1 / 2 / 0.2 + bonus[0], 0.1 / 0.2 + bonus[1], 0.05 / 0.2 + bonus[2]]
    assert weights["retain"] == [0.1, 1.0, 10.0][scores.index(max(scores))] == 1.0
    assert rule.fields()["meta_reward"] == pytest.approx(-0.1)
    restored = Bandit({"grid": [0.1, 1.0, 10.0], "exploration": 0.5}, {"forget": 1.0, "retain": 1.0})
    restored.load_state_dict(rule.state_dict())
    assert restored.update(dict(weights), signal(0.7)) == rule.update(dict(weights), signal(0.7))


def test_bad_controller_settings_are_config_errors():
    spec = get_objective("meta_cosine_rmu")
    with pytest.raises(ConfigError, match="unknown weight controller 'sgd'"):
        WeightControl(spec, spec.hparams(controller="sgd"))
    with pytest.raises(ConfigError, match="non-empty grid"):
        WeightControl(spec, spec.hparams(controller="bandit", grid=[]))
    with pytest.raises(ConfigError, match="'every' and 'val_size' must be >= 1"):
        WeightControl(spec, spec.hparams(every=0))
    assert {"hypergradient", "bandit"} <= set(list_controllers())
    assert {"weight_controller", "probe_directions"} <= set(list_companions())
    assert type(build_companion(get_objective("ga"), {})) is Companion


# ------------------------------------------------------------------------------ inside the trainer
SMALL = dict(forget="forget01", batch_size=4, probe_size=3, steps=6, seed=5, lr=1e-2, checkpoint_every=3)


def toy_run(tmp_path, monkeypatch, name, hparams, **fields):
    use_toy_model(monkeypatch)
    config = UnlearnConfig(objective="meta_cosine_rmu", hparams=hparams, **{**SMALL, **fields}).resolved()
    return Trainer(config, tmp_path / name, progress=False).run()


@pytest.mark.parametrize("rule", ["hypergradient", "bandit"])
def test_controller_logs_weights_and_resumes_exactly(tmp_path, monkeypatch, rule):
    hparams = {"controller": rule, "every": 2, "val_size": 4, "layer": 0, "meta_lr": 1e4, "grid": [0.5, 2.0]}
    full = toy_run(tmp_path, monkeypatch, "full", hparams)
    history = full.history
    assert full.status == "finished"
    assert {"weight_forget", "weight_retain", "meta_objective"} <= set(history.columns)
    measured = history["meta_objective"].notna()
    assert measured.tolist() == [True, False, True, False, True, False]
    if rule == "hypergradient":
        hyper = history.loc[measured, "meta_hypergradient_retain"].tolist()
        # no retain gradient at the reference (1 − cos at its minimum: zero up to rounding), some after
        assert all(abs(v) > 1e4 * abs(hyper[0]) for v in hyper[1:])
        assert (history["weight_forget"] + history["weight_retain"]).round(9).eq(2.0).all()
        assert history["weight_retain"].nunique() > 1  # the weights moved
    else:
        assert set(history["weight_retain"]) == {0.5, 2.0}  # both arms played
    figure = plot.term_weights(full)
    lines = [line for ax in figure.axes for line in ax.get_lines() if len(line.get_xdata()) > 1]
    assert len(lines) >= (4 if rule == "hypergradient" else 3)  # 2 weights, M (+ validation G-effects)
    if rule == "hypergradient":
        assert {"meta_geffect_forget_forget", "meta_geffect_retain_retain"} <= set(history.columns)
    # a run that dies at step 4 (after the checkpoint before step 3) and is resumed gives the same rows
    original = Trainer._step

    def dying(self, step):
        if step == 4:
            raise RuntimeError("killed")
        return original(self, step)

    monkeypatch.setattr(Trainer, "_step", dying)
    with pytest.raises(RuntimeError, match="killed"):
        toy_run(tmp_path, monkeypatch, "killed", hparams)
    monkeypatch.setattr(Trainer, "_step", original)
    resumed = Trainer(UnlearnConfig.load(tmp_path / "killed"), tmp_path / "killed", progress=False).run(resume=True)
    cols = [c for c in history.columns if c.startswith(("weight_", "meta_", "loss"))]
    assert resumed.history[cols].equals(history[cols])


def test_validation_rows_are_held_out_of_training(monkeypatch):
    from test_training_support import world_tokenizer

    data = UnlearningData(world_tokenizer(), TaskData(), "forget01", "retain99", seed=3, batch_size=4)
    forget_rows, retain_rows = list(data.forget_rows), list(data.retain_rows)
    held = data.hold_out("forget", 5)
    data.hold_out("retain", 6)
    assert held["input_ids"].shape[0] == 5
    assert len(data.forget_rows) == len(forget_rows) - 5 and len(data.retain_rows) == len(retain_rows) - 6
    kept = {row["question"] for row in data.forget_rows}
    gone = [row for row in forget_rows if row["question"] not in kept]
    assert len(gone) == 5
    drawn = {q for d in range(20) for q in data.encoder.tokenizer.batch_decode(data.forget_batch(d)["input_ids"])}
    assert not any(row["question"] in text for row in gone for text in drawn)
    with pytest.raises(ConfigError, match="at least one must stay"):
        data.hold_out("forget", len(data.forget_rows))


def test_validation_from_named_splits_leaves_training_rows_alone():
    from test_training_support import world_tokenizer

    data = UnlearningData(world_tokenizer(), TaskData(), "forget01", "retain99", seed=3, batch_size=4)
    before = (len(data.forget_rows), len(data.retain_rows))
    spec = get_objective("meta_cosine_rmu")
    control = WeightControl(spec, spec.hparams(val_size=5, val_forget="forget05", val_retain="retain95"))
    control.prepare(data)
    assert (len(data.forget_rows), len(data.retain_rows)) == before
    assert control.validation["forget"]["input_ids"].shape[0] == 5
    expected = data.probe("validation-retain", "retain95", 5).batch
    assert torch.equal(control.validation["retain"]["input_ids"], expected["input_ids"])


@pytest.mark.slow
def test_two_processes_learn_the_weights_one_process_learns(tmp_path):
    """Each process measures its share of the batch; the averaged hypergradient is the single-process one."""
    from test_ddp import TESTS, launch

    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from test_training_support import install_toy_model
        install_toy_model()
        import geffect
        geffect.unlearn("meta_cosine_rmu", forget="forget01", out=sys.argv[1], steps=4, batch_size=4, probe_size=2,
                        seed=2, lr=1e-2, progress=False,
                        hparams={{"layer": 0, "every": 1, "val_size": 4, "meta_lr": 1e6}})
    """))
    launch(script, tmp_path / "single", processes=1)
    launch(script, tmp_path / "ddp", processes=2)
    single, ddp = Run(tmp_path / "single").history, Run(tmp_path / "ddp").history
    assert single["weight_retain"].nunique() > 1  # the weights moved
    for column in ("weight_forget", "weight_retain", "meta_hypergradient_forget", "meta_objective"):
        assert np.allclose(ddp[column], single[column], rtol=1e-4, atol=1e-12), column
