"""TOFU metrics: each formula on hand-computed values, NLL scoring with a stub model whose
token probabilities are set by hand, and ``evaluate`` end to end on a tiny world."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import hmean, ks_2samp
from toy_models import UnigramStub
from transformers import LlamaConfig, LlamaForCausalLM

import geffect
from geffect.data import encode_qa, generate_world, train_tokenizer, world_texts
from geffect.evaluation import (
    answer_nlls,
    evaluate,
    forget_quality,
    forget_truth_ratios,
    model_utility,
    multiple_choice_probability,
    normalized_probability,
    perturbed_nlls,
    score_split,
    truth_ratio,
    truth_ratio_score,
)
from geffect.evaluation import generation as generation_module
from geffect.schema import IGNORE_INDEX

LOG2, LOG4, LOG16 = math.log(2), math.log(4), math.log(16)


# ------------------------------------------------------------------------------ pure formulas
def test_normalized_probability_is_exp_minus_mean_nll():
    assert np.allclose(normalized_probability([LOG2, 0.0, LOG4]), [0.5, 1.0, 0.25])


def test_multiple_choice_probability_normalises_over_correct_and_perturbed():
    # correct p = 1/2, perturbed 1/4 and 1/4 -> 0.5 / (0.5 + 0.5); ragged second row: 1/(1 + 1/2)
    got = multiple_choice_probability([LOG2, 0.0], [[LOG4, LOG4], [LOG2]])
    assert np.allclose(got, [0.5, 2 / 3])


def test_truth_ratio_geometric_and_arithmetic():
    # base P = 1/2; perturbed P = 1/4, 1/16: geometric mean 1/8 -> R = 1/4; arithmetic 5/32 -> R = 5/16
    assert np.allclose(truth_ratio([LOG2], [[LOG4, LOG16]]), [0.25])
    assert np.allclose(truth_ratio([LOG2], [[LOG4, LOG16]], mean="arithmetic"), [0.3125])
    with pytest.raises(ValueError, match="geometric"):
        truth_ratio([LOG2], [[LOG4]], mean="median")
    with pytest.raises(ValueError, match="rows"):
        truth_ratio([LOG2, LOG2], [[LOG4]])


def test_truth_ratio_scores():
    ratios = [0.25, 2.0, 1.0]
    assert truth_ratio_score(ratios, "forget") == pytest.approx((0.25 + 0.5 + 1.0) / 3)
    assert truth_ratio_score(ratios, "utility") == pytest.approx((0.75 + 0.0 + 0.0) / 3)
    assert truth_ratio_score([0.0, np.inf], "forget") == 0.0  # underflow limits
    with pytest.raises(ValueError, match="forget"):
        truth_ratio_score(ratios, "retain")


def test_forget_quality_is_ks_pvalue():
    same = [0.1, 0.5, 0.9, 1.3]
    assert forget_quality(same, same) == (1.0, 0.0)
    # Fully separated samples of 5 and 5: statistic 1 and the exact two-sided p-value
    # 2 / C(10, 5) (only the two extreme orderings are as extreme).
    p, stat = forget_quality([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert stat == 1.0 and p == pytest.approx(2 / math.comb(10, 5))
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(size=30), rng.lognormal(0.5, size=40)
    assert forget_quality(a, b) == pytest.approx((ks_2samp(a, b).pvalue, ks_2samp(a, b).statistic))


def test_model_utility_is_harmonic_mean():
    assert model_utility([1.0, 0.5]) == pytest.approx(2 / 3)
    assert model_utility([0.2, 0.4, 0.8]) == pytest.approx(3 / (5 + 2.5 + 1.25))
    assert model_utility([0.5, 0.0, 0.9]) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        model_utility([0.5, -0.1])


# ------------------------------------------------------------------------------ stub-model scoring
@pytest.fixture(scope="module")
def world():
    return generate_world(seed=0, n_authors=10, qa_per_author=20, n_countries=4, n_perturbed=3)


@pytest.fixture(scope="module")
def tokenizer(world):
    return train_tokenizer(world_texts(world), vocab_size=400)


def hand_nll(stub, tokenizer, question, answer):
    """Mean of -log w_y over the answer tokens (incl. EOS) of the encoded pair."""
    enc = encode_qa(tokenizer, question, answer)
    ys = [y for y in enc["labels"] if y != IGNORE_INDEX]
    return float(-stub.log_w.detach()[ys].mean())


def test_answer_nlls_match_hand_computation(world, tokenizer):
    stub = UnigramStub(len(tokenizer))
    rows = world["forget10"][:5]
    got = answer_nlls(stub, tokenizer, [r["question"] for r in rows], [r["answer"] for r in rows], batch_size=2)
    expected = [hand_nll(stub, tokenizer, r["question"], r["answer"]) for r in rows]
    assert np.allclose(got, expected, atol=1e-12)
    wrong = perturbed_nlls(stub, tokenizer, [r["question"] for r in rows], [r["perturbed_answer"] for r in rows])
    assert [len(w) for w in wrong] == [len(r["perturbed_answer"]) for r in rows]
    assert np.allclose(wrong[2], [hand_nll(stub, tokenizer, rows[2]["question"], a)
                                  for a in rows[2]["perturbed_answer"]], atol=1e-12)


def test_score_split_probability_truth_ratio_and_rouge(world, tokenizer, monkeypatch):
    stub = UnigramStub(len(tokenizer), seed=1)
    rows = world["world_facts"][:4]
    # Greedy answers fixed by hand: two exact answers and two empty ones -> mean recall 0.5.
    monkeypatch.setattr(generation_module, "greedy_answers",
                        lambda model, tok, qs, **kw: [rows[0]["answer"], "", rows[2]["answer"], ""])
    facts = score_split(stub, tokenizer, rows, "facts", name="world_facts")
    p = np.array([math.exp(-hand_nll(stub, tokenizer, r["question"], r["answer"])) for r in rows])
    wrong = [np.array([math.exp(-hand_nll(stub, tokenizer, r["question"], a)) for a in r["perturbed_answer"]])
             for r in rows]
    assert facts.probability == pytest.approx(np.mean([pi / (pi + w.sum()) for pi, w in zip(p, wrong)]))
    geo = np.array([np.exp(np.log(w).mean()) for w in wrong])
    assert np.allclose(facts.ratios, geo / p)
    assert facts.truth_ratio == pytest.approx(np.mean(np.maximum(0, 1 - geo / p)))
    assert facts.rouge == pytest.approx(0.5) and facts.n == 4

    retain = score_split(stub, tokenizer, rows, "retain", name="retain")
    para = np.array([math.exp(-hand_nll(stub, tokenizer, r["question"], r["paraphrased_answer"])) for r in rows])
    assert retain.probability == pytest.approx(p.mean())
    assert np.allclose(retain.ratios, geo / para)
    forget = score_split(stub, tokenizer, rows, "forget", name="forget")
    assert forget.truth_ratio == pytest.approx(np.mean(np.minimum(geo / para, para / geo)))


# ------------------------------------------------------------------------------ evaluate end to end
@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, attn_implementation="eager")
    return LlamaForCausalLM(config).eval()


def test_evaluate_end_to_end(world, tokenizer, tiny_model):
    result = evaluate(tiny_model, tokenizer, world=world, retain_model=tiny_model, max_examples=3,
                      max_new_tokens=3, batch_size=4, progress=False)
    assert json.loads(json.dumps(result)) == result
    for split in ("forget", "retain", "world_facts"):
        for metric in ("prob", "rouge", "truth_ratio"):
            assert 0.0 <= result[f"{split}_{metric}"] <= 1.0
        assert result[f"n_{split}"] == 3
    utility = [result[f"{s}_{m}"] for s in ("retain", "world_facts") for m in ("prob", "rouge", "truth_ratio")]
    expected = 0.0 if min(utility) == 0 else hmean(utility)
    assert result["model_utility"] == pytest.approx(expected)
    # The retain model is the model itself: identical truth ratios, KS statistic 0, p-value 1.
    assert result["forget_quality"] == 1.0 and result["forget_ks_statistic"] == 0.0
    assert result["forget_split"] == "forget10"


def test_evaluate_forget_quality_from_precomputed_ratios(world, tokenizer, tiny_model, monkeypatch):
    monkeypatch.setattr(generation_module, "greedy_answers", lambda model, tok, qs, **kw: [""] * len(qs))
    ratios = forget_truth_ratios(tiny_model, tokenizer, world, "forget10", max_examples=3)
    shifted = ratios * 1000.0  # a retain model that is far more confident in the paraphrases
    result = evaluate(tiny_model, tokenizer, world=world, retain_truth_ratios=shifted, max_examples=3,
                      progress=False)
    assert result["forget_ks_statistic"] == 1.0
    assert result["forget_quality"] == pytest.approx(ks_2samp(ratios, shifted).pvalue)
    no_ref = evaluate(tiny_model, tokenizer, world=world, max_examples=3, progress=False)
    assert "forget_quality" not in no_ref
    with pytest.raises(ValueError, match="same questions"):
        evaluate(tiny_model, tokenizer, world=world, retain_truth_ratios=ratios[:2], max_examples=3, progress=False)


def test_evaluate_prefers_tofu_perturbed_views_and_includes_real_authors(world, tokenizer, tiny_model, monkeypatch):
    monkeypatch.setattr(generation_module, "greedy_answers", lambda model, tok, qs, **kw: [""] * len(qs))
    tofu_like = dict(world)
    # TOFU's plain world_facts file has no perturbed answers; its _perturbed view has them.
    tofu_like["world_facts"] = [{**row, "perturbed_answer": []} for row in world["world_facts"]]
    tofu_like["world_facts_perturbed"] = world["world_facts"][:4]
    tofu_like["real_authors_perturbed"] = world["world_facts"][4:6]
    result = evaluate(tiny_model, tokenizer, world=tofu_like, max_examples=3, progress=False)
    assert result["n_world_facts"] == 3 and result["n_real_authors"] == 2
    utility = [result[f"{s}_{m}"] for s in ("retain", "world_facts", "real_authors")
               for m in ("prob", "rouge", "truth_ratio")]
    assert result["model_utility"] == (0.0 if min(utility) == 0 else pytest.approx(hmean(utility)))


def test_evaluate_reports_missing_splits(tokenizer, tiny_model, world):
    with pytest.raises(ValueError, match="world facts"):
        evaluate(tiny_model, tokenizer, world={k: v for k, v in world.items() if k != "world_facts"},
                 max_examples=2, progress=False)


def test_evaluate_is_exported_at_top_level():
    assert geffect.evaluate is evaluate
