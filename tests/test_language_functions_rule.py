"""The decision rule of analyses/language_functions.py (eligibility, score, the 2×2 verdict) on
hand-built metric tables (no training)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pandas as pd
import pytest

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"


@pytest.fixture(scope="module")
def lf():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ANALYSES))
        patch.setenv("HF_HUB_OFFLINE", "1")  # what analyses/common.py would set for the whole process
        module = importlib.import_module("language_functions")
        yield module
        sys.modules.pop("language_functions", None)


def table(hazard: dict[str, tuple[float, float, float]], toxicity: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Rows: hazard objective -> (hazard_mc, benign_mc, general_mc); toxicity -> (toxic_rate, neutral_fluency),
    with the fluency on toxic prompts at the target's value for the target only."""
    rows = [{"task": "hazard", "objective": k, "hazard_mc": a, "benign_mc": b, "general_mc": c}
            for k, (a, b, c) in hazard.items()]
    rows += [{"task": "toxicity", "objective": k, "toxic_rate": r, "neutral_fluency": f,
              "fluency": f if k == "(target)" else 50 * f} for k, (r, f) in toxicity.items()]
    return pd.DataFrame(rows)


TARGET_H, TARGET_T = (0.9, 0.8, 0.7), (0.6, 10.0)


def test_score_and_eligibility(lf):
    judged = lf.judge(table({"(target)": TARGET_H, "kept": (0.5, 0.71, 0.6), "damaging": (0.3, 0.69, 0.7)},
                            {"(target)": TARGET_T, "fluent": (0.2, 15.0), "garbled": (0.0, 15.1)})).set_index("objective")
    assert judged.loc["kept", "score"] == pytest.approx(0.4) and judged.loc["kept", "eligible"]
    assert judged.loc["damaging", "score"] == pytest.approx(0.6) and not judged.loc["damaging", "eligible"]
    assert judged.loc["fluent", "score"] == pytest.approx(0.4) and judged.loc["fluent", "eligible"]
    assert not judged.loc["garbled", "eligible"]
    first_rule = lf.judge(table({"(target)": TARGET_H}, {"(target)": TARGET_T, "fluent": (0.2, 15.0)}),
                          fluency="fluency").set_index("objective")
    assert not first_rule.loc["fluent", "eligible"]  # that rule reads the fluency on the toxic prompts


def full(lf, hazard_scores: dict[str, float], toxicity_scores: dict[str, float],
         broken: dict[str, tuple[str, ...]] | None = None) -> pd.DataFrame:
    """A judged table where each objective lowers the task's primary metric by its score; ``broken[task]``
    objectives lose the task's utility (benign MC or fluency)."""
    broken = broken or {}
    names = ("cosine_rmu", "meta_cosine_rmu", "probe_directions", "rmu", "ga", "npo")
    hazard = {"(target)": TARGET_H} | {n: (0.9 - hazard_scores.get(n, 0.0),
                                          0.3 if n in broken.get("hazard", ()) else 0.8, 0.7) for n in names}
    toxicity = {"(target)": TARGET_T} | {n: (0.6 - toxicity_scores.get(n, 0.0),
                                            99.0 if n in broken.get("toxicity", ()) else 10.0) for n in names}
    return lf.judge(table(hazard, toxicity))


def test_claim_holds_when_each_own_objective_wins(lf):
    holds, lines = lf.verdict(full(lf, {"meta_cosine_rmu": 0.5, "probe_directions": 0.2, "ga": 0.6},
                                   {"probe_directions": 0.4, "cosine_rmu": 0.1}))
    assert holds
    assert "**wins**" in lines[0] and "does not beat the baselines" in lines[0]  # GA drops hazard MC more
    assert "**wins**" in lines[1] and "beats the baselines" in lines[1]


def test_claim_fails_when_the_other_functions_objective_wins_or_the_own_one_is_ineligible(lf):
    holds, lines = lf.verdict(full(lf, {"cosine_rmu": 0.3, "probe_directions": 0.4}, {"probe_directions": 0.4}))
    assert not holds and "does not win" in lines[0] and "**wins**" in lines[1]
    holds, lines = lf.verdict(full(lf, {"cosine_rmu": 0.3}, {"probe_directions": 0.5, "cosine_rmu": 0.1},
                                   broken={"toxicity": ("probe_directions",)}))
    assert not holds and "**wins**" in lines[0] and "does not win" in lines[1]


def test_an_ineligible_rival_does_not_count(lf):
    scores = ({"cosine_rmu": 0.1, "probe_directions": 0.5}, {"probe_directions": 0.2, "meta_cosine_rmu": 0.5})
    assert not lf.verdict(full(lf, *scores))[0]
    broken = {"hazard": ("probe_directions",), "toxicity": ("meta_cosine_rmu",)}
    assert lf.verdict(full(lf, *scores, broken=broken))[0]
