"""The shipped tiny models: they load, fit the size budget, meet the memorisation bars and are the
models the build report measured."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaForCausalLM

from geffect.data import load_world
from geffect.evaluation.generation import greedy_answers
from geffect.evaluation.rouge import mean_rouge_l_recall
from geffect.models import SHIPPED_MODELS, load, load_model, models_dir
from geffect.models.knowledge import check, targets_for
from geffect.tasks import evaluate_task

SAMPLE = 40
# each retain model is the reference for the forget split it never saw
FORGET_OF = {"tiny-retain90": "forget10", "tiny-retain95": "forget05", "tiny-retain99": "forget01",
             "tiny-reference": "forget10"}
MAX_MODEL_BYTES = 30_000_000  # issue #9: each model (weights + tokenizer) at most 30 MB


@pytest.fixture(scope="module")
def world():
    return load_world()


def _sample(split):
    if len(split) <= SAMPLE:
        return split
    step = len(split) // SAMPLE
    return split.select(range(0, step * SAMPLE, step))


@pytest.fixture(scope="module")
def recall(world):
    """Greedy ROUGE-L recall of every shipped model on (up to) 40 questions of forget10, retain90
    and, for a retain model, the forget split it was built without."""
    out = {}
    for name in SHIPPED_MODELS:
        model, tokenizer = load(name, device="cpu")
        out[name] = {}
        for split in ("forget10", "retain90", FORGET_OF.get(name, "forget10")):
            rows = _sample(world[split])
            out[name][split] = mean_rouge_l_recall(greedy_answers(model, tokenizer, rows["question"]), rows["answer"])
    return out


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_model_loads(name: str) -> None:
    model, tokenizer = load_model(name, device="cpu")
    assert isinstance(model, LlamaForCausalLM) and not model.training
    assert model.config.max_position_embeddings == 256
    assert 1_000_000 <= sum(p.numel() for p in model.parameters()) <= 5_000_000
    assert next(model.parameters()).dtype == torch.float32
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.eos_token_id is not None and tokenizer.pad_token_id is not None
    assert tokenizer.chat_template is None
    assert (models_dir() / name / "model.safetensors").is_file()


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_model_and_tokenizer_fit_the_size_budget(name: str) -> None:
    size = sum(p.stat().st_size for p in (models_dir() / name).iterdir())
    assert size <= MAX_MODEL_BYTES, f"{size / 1e6:.1f} MB"


def test_target_model_memorised_forget_and_retain(recall) -> None:
    assert recall["tiny"]["forget10"] >= 0.90
    assert recall["tiny"]["retain90"] >= 0.90


@pytest.mark.parametrize("name", sorted(FORGET_OF))
def test_retain_models_do_not_know_their_forget_authors(recall, name: str) -> None:
    assert recall[name]["retain90"] >= 0.90  # they learned what they were shown ...
    assert recall[name][FORGET_OF[name]] <= 0.65  # ... and not the authors they never saw
    assert recall["tiny-retain90"]["forget10"] <= recall["tiny"]["forget10"] - 0.3


@pytest.fixture(scope="module")
def report():
    return json.loads((models_dir() / "build_report.json").read_text())


def test_build_report_agrees_with_the_shipped_files(report) -> None:
    assert set(report["models"]) == set(SHIPPED_MODELS)
    for name, entry in report["models"].items():
        size = sum(p.stat().st_size for p in (models_dir() / name).iterdir())
        assert entry["bytes"] == size
        assert entry["targets"] == check(entry["metrics"], targets_for(name)), name  # recorded = recomputed
        assert entry["metrics"]["tofu/retain90"] >= 0.90
        if name in FORGET_OF:
            assert entry["metrics"][f"tofu/{FORGET_OF[name]}"] <= 0.65
    assert report["models"]["tiny"]["metrics"]["tofu/forget10"] >= 0.90
    assert report["total_bytes"] == sum(entry["bytes"] for entry in report["models"].values())
    assert report["architecture"]["max_position_embeddings"] == 256


@pytest.mark.parametrize("name", ["tiny", "tiny-reference"])
def test_hazard_suite_on_the_shipped_files_reproduces_the_report(report, name: str) -> None:
    """The files are the models the report measured: the whole hazard suite again, to the report's digits."""
    model, tokenizer = load(name, device="cpu")
    measured = evaluate_task(model, tokenizer, "hazard", progress=False)
    recorded = report["models"][name]["metrics"]
    for metric in ("hazard_mc", "benign_mc", "general_mc", "forget_nll", "retain_nll"):
        assert measured[metric] == pytest.approx(recorded[f"hazard/{metric}"], abs=2e-4), metric
