"""The verdict rules of analyses/claims.py on runs with known risk curves (no training)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"


@pytest.fixture(scope="module")
def claims():
    environ = dict(os.environ)  # analyses/common.py sets HF_HUB_OFFLINE on import
    sys.path.insert(0, str(ANALYSES))
    try:
        spec = importlib.util.spec_from_file_location("claims_under_test", ANALYSES / "claims.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("claims_under_test", None)
        sys.path.remove(str(ANALYSES))
        os.environ.clear()
        os.environ.update(environ)


def linear_run(forget_rate: float, retain_rate: float, steps: int = 10, instances: int = 6):
    """A run whose mean forget / retain risks rise by the given nats per step (instances spread ±10 %)."""
    rows = []
    spread = np.linspace(0.9, 1.1, instances)
    for step in range(steps):
        for probe, rate in (("forget", forget_rate), ("retain", retain_rate)):
            for i, factor in enumerate(spread):
                rows.append((step, probe, i, 0.01 + rate * factor * step, 0.01 + rate * factor * (step + 1), 0.0))
    risks = pd.DataFrame(rows, columns=["step", "probe", "instance", "risk", "risk_after", "predicted_change"])
    return SimpleNamespace(risks=risks)


def test_retain_at_forget_interpolates_the_curves(claims):
    run = linear_run(0.4, 0.1)  # forget reaches 1 nat at step 2.5, retain is a quarter of forget
    assert claims.retain_at_forget(run, 1.0) == pytest.approx(0.25)
    assert claims.retain_at_forget(run, 3.9) == pytest.approx(0.975)
    assert claims.retain_at_forget(run, 5.0) is None  # 4 nats in 10 steps: never reached


def test_damage_at_matched_forgetting_decides_the_weighting_verdict(claims):
    ga, gentle, harsh = linear_run(0.4, 0.2), linear_run(0.2, 0.04), linear_run(0.4, 0.3)
    runs = {"ga": ga, "wga": gentle}
    matched = claims.matched_damage(gentle, ga)
    assert matched["ratio"] == pytest.approx(0.4)  # 0.2 vs 0.5 nats of retain rise at 1 nat forgotten
    assert claims.claim_weighting(runs, "wga", "WGA").verdict == claims.REPRODUCED
    assert claims.claim_weighting({"ga": ga, "wga": harsh}, "wga", "WGA").verdict == claims.CONTRADICTED
    near = linear_run(0.4, 0.18)  # 0.9 × GA's damage: between the thresholds
    assert claims.claim_weighting({"ga": ga, "wga": near}, "wga", "WGA").verdict == claims.CANNOT_TELL
    slow = linear_run(0.05, 0.0)  # forgets 0.5 nat in all: no matched comparison
    assert claims.claim_weighting({"ga": ga, "wga": slow}, "wga", "WGA").verdict == claims.CANNOT_TELL


def test_damage_verdict_thresholds(claims):
    assert claims.damage_verdict(0.8) == claims.REPRODUCED
    assert claims.damage_verdict(0.81) == claims.CANNOT_TELL
    assert claims.damage_verdict(1.0) == claims.CONTRADICTED


def test_model_fingerprint_follows_the_weights(claims, tmp_path):
    """A rebuilt model under the same folder gets another fingerprint, so its old runs are not reused."""
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"old weights")
    (tmp_path / "notes.txt").write_text("not part of the model")
    before = claims.model_fingerprint(str(tmp_path))
    assert len(before) == 64
    (tmp_path / "notes.txt").write_text("edited")
    assert claims.model_fingerprint(str(tmp_path)) == before
    (tmp_path / "model.safetensors").write_bytes(b"new weights")
    assert claims.model_fingerprint(str(tmp_path)) != before


def with_effects(run, per_step: dict[tuple[str, str], np.ndarray], history: dict[str, np.ndarray] | None = None):
    """Add whole-model effects (one layer, one instance) per (probe, direction) and a history table."""
    rows = [(step, probe, 0, "block.0", direction, float(value))
            for (probe, direction), values in per_step.items() for step, value in enumerate(values)]
    run.effects = pd.DataFrame(rows, columns=["step", "probe", "instance", "layer", "direction", "value"])
    steps = run.risks["step"].max() + 1
    run.history = pd.DataFrame({"step": np.arange(steps), **(history or {})})
    return run


def bent_run(forget_rate: float, retain_rate: float, extra: float, knee: int = 5):
    """linear_run whose retain risk rises ``extra`` nats per step faster (slower if < 0) from step ``knee`` on."""
    run = linear_run(forget_rate, retain_rate)
    rows = (run.risks["probe"] == "retain") & (run.risks["step"] >= knee)
    steps = run.risks.loc[rows, "step"]
    run.risks.loc[rows, "risk"] += extra * (steps - knee)
    run.risks.loc[rows, "risk_after"] += extra * (steps - knee + 1)
    return run


def test_ga_damage_growth_compares_retain_per_forget_at_the_end_and_at_one_nat(claims):
    ones = {(p, d): np.ones(10) for p in ("forget", "retain") for d in ("gradient", "update")}
    growing = claims.claim_ga_damage_grows({"ga": with_effects(bent_run(0.5, 0.1, 0.4), ones)})
    assert growing.verdict == claims.REPRODUCED, growing.numbers
    assert growing.details["end"] >= 2 * growing.details["start"]
    slowing = claims.claim_ga_damage_grows({"ga": with_effects(bent_run(0.5, 0.1, -0.08), ones)})
    assert slowing.verdict == claims.CONTRADICTED, slowing.numbers
    between = claims.claim_ga_damage_grows({"ga": with_effects(bent_run(0.5, 0.1, 0.1), ones)})
    assert between.verdict == claims.CANNOT_TELL, between.numbers  # grows, but by less than 2 ×
    short = with_effects(linear_run(0.1, 0.05), ones)  # 1 nat forgotten in all: too little to judge
    assert claims.claim_ga_damage_grows({"ga": short}).verdict == claims.CANNOT_TELL


def test_npo_fading_needs_both_the_weight_and_the_g_effect_to_fall(claims):
    decay = np.exp(-np.arange(10) / 2.0)
    fading = {("forget", "gradient"): -decay, ("forget", "update"): decay}
    run = with_effects(linear_run(0.2, 0.02), fading, {"loss_npo_weight": decay})
    assert claims.claim_npo_fades({"npo": run}).verdict == claims.REPRODUCED
    flat = {("forget", "gradient"): -np.ones(10), ("forget", "update"): np.ones(10)}
    run = with_effects(linear_run(0.2, 0.02), flat, {"loss_npo_weight": np.full(10, 0.95)})
    assert claims.claim_npo_fades({"npo": run}).verdict == claims.CONTRADICTED
    half = with_effects(linear_run(0.2, 0.02), fading, {"loss_npo_weight": np.linspace(1.0, 0.7, 10)})
    assert claims.claim_npo_fades({"npo": half}).verdict == claims.CANNOT_TELL


def test_a_claim_whose_runs_are_missing_says_not_run(claims):
    ga = with_effects(linear_run(0.4, 0.1), {(p, d): np.ones(10) for p in ("forget", "retain")
                                             for d in ("gradient", "update")})
    assert claims.claim_ga_damage_grows({"ga": ga}).verdict != claims.NOT_RUN
    rmu = claims.claim_rmu_layers({"ga": ga})
    assert rmu.verdict == claims.NOT_RUN and "rmu_block0" in rmu.numbers
    assert [c.verdict for c in claims.claim_po({"ga": ga})] == [claims.NOT_RUN] * 2
    assert claims.claim_weighting({"ga": ga}, "wga", "WGA").verdict == claims.NOT_RUN
