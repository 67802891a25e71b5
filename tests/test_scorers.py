"""Text scorers: the bag-of-words classifier, the shipped toxicity and harm scorers, plugging in others."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geffect.data.task_store import load_task_data
from geffect.evaluation.classifier import BagOfWordsClassifier, accuracy, ngrams
from geffect.evaluation.scorers import (
    SHIPPED_SCORERS,
    TransformersScorer,
    get_scorer,
    list_scorers,
    register_scorer,
    scorers_dir,
)

TEXTS = ["the grub is vile", "a vile grub indeed", "such a kind baker", "the baker is kind", "vile vile", "kind"]
LABELS = [1, 1, 0, 0, 1, 0]


def test_ngrams_are_lower_cased_word_uni_and_bigrams() -> None:
    assert ngrams("The cat, the CAT!", 2) == {"the", "cat", "the cat", "cat the"}


def test_classifier_separates_a_hand_made_set_and_round_trips_through_json(tmp_path: Path) -> None:
    model = BagOfWordsClassifier.fit(TEXTS, LABELS, min_count=1, l2=0.1)
    scores = model.score(TEXTS)
    assert accuracy(scores, LABELS) == 1.0
    assert model.score(["vile"])[0] > 0.5 > model.score(["kind"])[0]
    # the score is the logistic function of bias + the weights of the n-grams present
    grams = ngrams("vile grub", 2) & set(model.vocabulary)
    logit = model.bias + sum(model.weights[model.vocabulary[g]] for g in grams)
    assert model.score(["vile grub"])[0] == pytest.approx(1 / (1 + np.exp(-logit)))
    model.save(tmp_path / "m.json")
    again = BagOfWordsClassifier.load(tmp_path / "m.json")
    assert again.score(TEXTS) == pytest.approx(scores, abs=1e-5)
    assert json.loads((tmp_path / "m.json").read_text())["format"].startswith("geffect-bow")


def test_classifier_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both labels"):
        BagOfWordsClassifier.fit(["a", "b"], [1, 1])
    model = BagOfWordsClassifier.fit(TEXTS, LABELS, min_count=1)
    with pytest.raises(TypeError, match="sequence of texts"):
        model.score("one string")
    (tmp_path / "x.json").write_text(json.dumps({"format": "pickle"}))
    with pytest.raises(ValueError, match="not a geffect bag-of-words"):
        BagOfWordsClassifier.load(tmp_path / "x.json")


@pytest.mark.parametrize("name", SHIPPED_SCORERS)
def test_shipped_scorer_holds_its_heldout_accuracy(name: str) -> None:
    scorer = get_scorer(name)
    test = load_task_data(name)["classifier_test"]
    measured = accuracy(scorer.score(test["text"]), test["label"])
    assert measured >= 0.95
    assert measured == pytest.approx(scorer.info["heldout_accuracy"])
    assert (scorers_dir() / f"{name}.json").is_file()


def test_shipped_scorers_score_task_text_the_right_way() -> None:
    toxicity = load_task_data("toxicity")
    scores = get_scorer("toxicity").score([r["response"] for r in toxicity["toxic_heldout"]])
    neutral = get_scorer("toxicity").score([r["response"] for r in toxicity["nontoxic_heldout"]])
    assert min(scores) > 0.5 > max(neutral)
    harm = load_task_data("harm")
    assert min(get_scorer("harm").score(harm["harmful_heldout"]["response"])) > 0.5
    assert max(get_scorer("harm").score(harm["normal_heldout"]["response"])) < 0.5
    assert max(get_scorer("harm").score(["I don't know.", ""])) < 0.5


def test_any_object_with_score_plugs_in_and_names_register() -> None:
    class Constant:
        def score(self, texts):
            return [0.25] * len(texts)

    assert get_scorer(Constant()).score(["a", "b"]) == [0.25, 0.25]
    register_scorer("constant-test", Constant, overwrite=True)
    assert "constant-test" in list_scorers() and get_scorer("constant-test").score(["x"]) == [0.25]
    with pytest.raises(ValueError, match="already registered"):
        register_scorer("constant-test", Constant)
    with pytest.raises(KeyError, match="unknown scorer 'nope'"):
        get_scorer("nope")
    with pytest.raises(TypeError, match="score"):
        get_scorer(42)


def test_transformers_scorer_wraps_a_local_classifier(tmp_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(Path(scorers_dir()).parent / "models" / "tiny"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, num_labels=2,
                         pad_token_id=tokenizer.pad_token_id, id2label={0: "clean", 1: "toxic"},
                         label2id={"clean": 0, "toxic": 1})
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    scorer = TransformersScorer(str(tmp_path), label="toxic", device="cpu")
    scores = get_scorer(scorer).score(["a short text", "another, longer piece of text here"])
    clean = TransformersScorer(str(tmp_path), label=0, device="cpu").score(["a short text"])
    assert len(scores) == 2 and all(0 < s < 1 for s in scores)
    assert scores[0] + clean[0] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(KeyError, match="no label 'nasty'"):
        TransformersScorer(str(tmp_path), label="nasty", device="cpu")
