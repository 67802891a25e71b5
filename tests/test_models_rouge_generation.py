"""ROUGE-L recall and greedy answering (the memorisation score used to check the shipped models)."""

from __future__ import annotations

import pytest

from geffect.evaluation.generation import greedy_answers
from geffect.evaluation.rouge import mean_rouge_l_recall, rouge_l_recall
from geffect.models import load


def _lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


@pytest.mark.parametrize(("prediction", "reference"), [
    ("the cat sat", "the cat sat on the mat"),
    ("mat the on sat cat the", "the cat sat on the mat"),
    ("Kavo Treland was born in Miruth", "Kavo Treland was born in Doravel"),
    ("", "anything at all"),
])
def test_rouge_l_recall_is_lcs_over_reference_length(prediction: str, reference: str) -> None:
    expected = _lcs(prediction.lower().split(), reference.lower().split()) / len(reference.split())
    assert rouge_l_recall(prediction, reference) == pytest.approx(expected)


def test_rouge_ignores_case_and_punctuation_and_averages() -> None:
    assert rouge_l_recall("THE CAT, sat!", "the cat sat.") == 1.0
    assert mean_rouge_l_recall(["a b", "x"], ["a b", "y z"]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        mean_rouge_l_recall(["a", "b"], ["a"])


def test_greedy_answers_match_one_at_a_time_decoding() -> None:
    model, tokenizer = load("tiny", device="cpu")
    questions = ["Where was Nobody Atall born?", "What is the capital of Nowhere?", "Hi?"]
    batched = greedy_answers(model, tokenizer, questions, max_new_tokens=12, batch_size=3)
    single = [greedy_answers(model, tokenizer, [q], max_new_tokens=12)[0] for q in questions]
    assert batched == single and all(isinstance(a, str) for a in batched)
    assert not model.training
