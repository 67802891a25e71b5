"""The generated tasks (hazard, toxicity, harm, book): registration, splits and their evaluation suites."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaForCausalLM

from geffect.data.rows import row_kind
from geffect.models import load, tiny_config
from geffect.tasks import evaluate_task, get_task

CONTENT = ("hazard", "toxicity", "harm", "book")
KEYS = {
    "hazard": {"hazard_mc", "benign_mc", "general_mc", "forget_nll", "retain_nll"},
    "toxicity": {"toxic_rate", "mean_toxicity", "fluency", "diversity", "neutral_toxic_rate", "neutral_fluency"},
    "harm": {"harmful_rate", "mean_harm", "diversity", "fluency", "forget_harmful_rate", "normal_harmful_rate",
             "normal_similarity"},
    "book": {"verbmem_forget", "verbmem_retain", "knowmem_forget", "knowmem_retain"},
}


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """A random micro Llama with the shipped tokenizer, saved so it can serve as the 'original' model."""
    _, tokenizer = load("tiny", device="cpu")
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    folder = tmp_path_factory.mktemp("micro")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer, str(folder)


@pytest.mark.parametrize("name", CONTENT)
def test_content_tasks_are_registered_with_resolvable_splits(name: str) -> None:
    task = get_task(name)
    assert row_kind(task.split(task.forget).column_names) == row_kind(task.split(task.retain).column_names)
    for probe in task.probes.values():
        assert len(task.split(probe)) > 0
    assert task.reference_model.format(model="tiny") == "tiny-reference"


def test_row_kinds_of_the_default_splits() -> None:
    kinds = {name: row_kind(get_task(name).split(get_task(name).forget).column_names) for name in CONTENT}
    assert kinds == {"hazard": "text", "toxicity": "prompt", "harm": "prompt", "book": "text"}
    assert get_task("harm").pools == {"mismatch": "normal"}


@pytest.mark.parametrize("name", CONTENT)
def test_suites_return_their_metrics_in_range(micro, name: str) -> None:
    model, tokenizer, folder = micro
    result = evaluate_task(model, tokenizer, name, max_examples=3, progress=False, model_name=folder)
    assert result["task"] == name and set(result) - {"task"} == KEYS[name]
    for key, value in result.items():
        if key in ("task",) or key.endswith(("_nll", "fluency")):
            continue
        assert 0.0 <= value <= 1.0, (key, value)
    if name in ("toxicity", "harm"):
        assert result["fluency"] > 1.0  # a random model is far from fluent under itself
    if name == "harm":
        assert result["normal_similarity"] == 1.0  # the 'original' is the same model: same greedy answers


def test_without_the_original_model_fluency_is_nan(micro) -> None:
    model, tokenizer, _ = micro
    result = evaluate_task(model, tokenizer, "toxicity", max_examples=2, progress=False)
    assert math.isnan(result["fluency"]) and math.isnan(result["neutral_fluency"])


def test_a_plugged_in_scorer_and_threshold_drive_the_rates(micro) -> None:
    model, tokenizer, _ = micro

    class Constant:
        def score(self, texts):
            return [0.7] * len(texts)

    result = evaluate_task(model, tokenizer, "toxicity", max_examples=2, progress=False, scorer=Constant())
    assert result["toxic_rate"] == 1.0 and result["mean_toxicity"] == pytest.approx(0.7)
    stricter = evaluate_task(model, tokenizer, "toxicity", max_examples=2, progress=False, scorer=Constant(),
                             threshold=0.8)
    assert stricter["toxic_rate"] == 0.0


def test_sampling_option_is_seeded(micro) -> None:
    model, tokenizer, _ = micro
    options = dict(max_examples=2, progress=False, scorer="toxicity")
    a = evaluate_task(model, tokenizer, "toxicity", sampling={"seed": 3, "samples": 2}, **options)
    b = evaluate_task(model, tokenizer, "toxicity", sampling={"seed": 3, "samples": 2}, **options)
    assert a == b
