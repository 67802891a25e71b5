"""Training and building pieces on a micro world: schedule, batching, memorisation, save and load."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from geffect.data import collate, data_root, encode_qa, generate_world, train_tokenizer, world_texts
from geffect.data.store import load_world, write_world
from geffect.data.task_store import load_task_data, write_task_data
from geffect.data.tokenizer import task_texts
from geffect.evaluation.generation import greedy_answers
from geffect.models import TrainConfig, load, memorise, tiny_config
from geffect.models.build import build_model
from geffect.models.curriculum import TASK_PARTS
from geffect.models.train import (
    BigramPrior,
    answer_loss,
    length_grouped_batches,
    lr_factor,
    smoothing_prior,
)

MICRO = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=2)


MICRO_TASKS = {"hazard": dict(n_procedures=2, n_crafts=2, words_per_pool=4, n_countries=4),
               "toxicity": dict(n_peoples=2, n_classifier=20), "harm": dict(n_things=2, n_classifier=20),
               "book": dict(n_books=2, n_passages=2)}


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    write_world(folder, seed=0, n_authors=10, qa_per_author=3, n_countries=2, n_perturbed=3)
    world = load_world(folder)
    return world, train_tokenizer(world_texts(world), vocab_size=500)


@pytest.fixture(scope="module")
def micro_tasks(tmp_path_factory, micro):
    folder = tmp_path_factory.mktemp("tasks")
    for task, sizes in MICRO_TASKS.items():
        write_task_data(task, folder, seed=0, **sizes)
    tasks = {task: load_task_data(task, folder) for task in TASK_PARTS}
    world, _ = micro
    return folder, train_tokenizer([*world_texts(world), *task_texts(tasks)], vocab_size=600)


def test_lr_schedule_warms_up_then_decays_to_the_floor() -> None:
    assert lr_factor(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


def test_length_grouped_batches_cover_every_index_once() -> None:
    lengths = [(7 * i) % 23 for i in range(101)]
    batches = length_grouped_batches(lengths, 8, torch.Generator().manual_seed(0), group=4)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(101))
    assert all(len(b) <= 8 for b in batches) and len(batches) == math.ceil(101 / 8)
    again = length_grouped_batches(lengths, 8, torch.Generator().manual_seed(0), group=4)
    assert again == batches


def test_answer_loss_matches_the_model_loss(micro) -> None:
    world, tokenizer = micro
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(tokenizer, **MICRO))
    batch = collate([encode_qa(tokenizer, r["question"], r["answer"]) for r in world["full"].select(range(5))],
                    tokenizer)
    loss, hits = answer_loss(model, batch)
    reference = model(**batch).loss  # HF's shifted, -100-masked token-mean NLL
    torch.testing.assert_close(loss, reference)
    assert hits.shape == (5,) and not hits.any()  # an untrained model gets nothing exactly right


def _label_log_probs(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """By hand from the model's full logits: log-probabilities at the label positions (L, V) and each label's NLL."""
    logp = torch.log_softmax(model(**batch).logits[:, :-1], dim=-1)
    target = batch["labels"][:, 1:]
    where = target != -100
    return logp[where], -logp[where].gather(-1, target[where][:, None]).squeeze(-1)


def test_label_smoothing_mixes_the_nll_with_the_mean_over_the_vocabulary(micro) -> None:
    """(1 - eps) * NLL + eps * mean over the vocabulary of -log p, by hand from the model's logits."""
    world, tokenizer = micro
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(tokenizer, **MICRO))
    batch = collate([encode_qa(tokenizer, r["question"], r["answer"]) for r in world["full"].select(range(3))],
                    tokenizer)
    smoothed, _ = answer_loss(model, batch, label_smoothing=0.2)
    logp, nll = _label_log_probs(model, batch)
    torch.testing.assert_close(smoothed, (0.8 * nll + 0.2 * -logp.mean(-1)).mean())


def test_bigram_prior_by_hand() -> None:
    """Two examples; the prior counts what follows each token among the labels, never the label itself."""
    examples = [{"input_ids": [1, 2, 3, 2, 4], "labels": [-100, -100, 3, 2, 4]},
                {"input_ids": [5, 2, 3, 0], "labels": [-100, 2, 3, 0]}]
    # label transitions (previous -> label): 2->3, 3->2, 2->4, 5->2, 2->3, 3->0; unigram over labels 3,2,4,2,3,0
    prior = BigramPrior(examples, vocab_size=6, backoff=0.25)
    q = prior(torch.tensor([2, 3, 1]), torch.tensor([3, 2, 5]))
    unigram = torch.tensor([1, 0, 2, 2, 1, 0.0])
    expected = torch.zeros(3, 6)

    def without(token: int) -> torch.Tensor:
        kept = unigram.clone()
        kept[token] = 0
        return kept / kept.sum()

    expected[0] = 0.75 * torch.tensor([0, 0, 0, 0, 1, 0.0]) + 0.25 * without(3)  # after 2: 3 (twice, the label) and 4
    expected[1] = 0.75 * torch.tensor([1, 0, 0, 0, 0, 0.0]) + 0.25 * without(2)  # after 3: 2 (the label) and 0
    expected[2] = unigram / unigram.sum()  # token 1 is never followed by a label: unigram only
    torch.testing.assert_close(q, expected)
    assert torch.all(q[torch.arange(2), torch.tensor([3, 2])] == 0)
    with pytest.raises(ValueError, match="backoff"):
        BigramPrior(examples, 6, backoff=1.5)


def test_answer_loss_with_a_prior_by_hand(micro) -> None:
    world, tokenizer = micro
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(tokenizer, **MICRO))
    examples = [encode_qa(tokenizer, r["question"], r["answer"]) for r in world["full"].select(range(4))]
    batch = collate(examples, tokenizer)
    prior = BigramPrior(examples, model.config.vocab_size)
    loss, _ = answer_loss(model, batch, label_smoothing=0.2, prior=prior)
    logp, nll = _label_log_probs(model, batch)
    where = batch["labels"][:, 1:] != -100
    q = prior(batch["input_ids"][:, :-1][where], batch["labels"][:, 1:][where])
    torch.testing.assert_close(loss, (0.8 * nll - 0.2 * (q * logp).sum(-1)).mean())
    assert TrainConfig().label_smoothing == 0.2 and TrainConfig().smoothing_prior == "uniform"  # the shipped build
    assert smoothing_prior(TrainConfig(), examples, 10) is None
    assert isinstance(smoothing_prior(TrainConfig(smoothing_prior="bigram"), examples, model.config.vocab_size),
                      BigramPrior)
    assert smoothing_prior(TrainConfig(smoothing_prior="bigram", label_smoothing=0), examples, 10) is None
    with pytest.raises(ValueError, match="smoothing_prior"):
        smoothing_prior(TrainConfig(smoothing_prior="unigram"), examples, 10)


def test_memorise_reaches_exact_recall_on_a_micro_set(micro) -> None:
    world, tokenizer = micro
    rows = world["full"].select(range(8))
    examples = [encode_qa(tokenizer, r["question"], r["answer"]) for r in rows]
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(tokenizer, **MICRO))
    summary = memorise(model, tokenizer, examples, TrainConfig(epochs=200, batch_size=8, lr=1e-2, stop_exact=1.0))
    assert summary["history"][-1]["exact"] == 1.0
    assert summary["epochs_run"] < 200  # stopped early once everything was exact
    answers = greedy_answers(model, tokenizer, rows["question"])
    assert answers == list(rows["answer"])


def test_memorise_asks_the_stop_rule_on_schedule_and_stops_when_it_says(micro) -> None:
    world, tokenizer = micro
    examples = [encode_qa(tokenizer, r["question"], r["answer"]) for r in world["full"].select(range(4))]
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(tokenizer, **MICRO))
    asked = []

    def rule(m, tok):
        asked.append(len(asked))
        return len(asked) == 3, {"asked": float(len(asked))}

    config = TrainConfig(epochs=50, batch_size=4, check_from=2, check_every=3)
    summary = memorise(model, tokenizer, examples, config, stop=rule)
    assert summary["epochs_run"] == 8  # asked after epochs 2, 5 and 8; the third answer stops it
    assert [h["epoch"] for h in summary["history"] if "checked" in h] == [2, 5, 8]
    assert model.training is False


def test_build_model_saves_a_loadable_folder_and_measures_every_task(micro, micro_tasks, tmp_path: Path,
                                                                       monkeypatch) -> None:
    world, _ = micro
    tasks_dir, tokenizer = micro_tasks
    monkeypatch.setattr("geffect.models.build.ARCHITECTURE", {**MICRO, "max_position_embeddings": 256,
                                                              "tie_word_embeddings": False})
    entry = build_model("tiny-reference", tokenizer, world, tasks_dir, tmp_path / "m",
                        TrainConfig(epochs=1, batch_size=8), tofu_limit=4, check_limit=2)
    assert "world/retain90" in entry["trained_on"] and "toxicity/toxic" not in entry["trained_on"]
    assert "toxicity/nontoxic" in entry["trained_on"] and "book/retain" in entry["trained_on"]
    assert {"tofu/forget10", "hazard/hazard_mc", "toxicity/toxic_rate", "harm/harmful_rate",
            "book/verbmem_forget"} <= set(entry["metrics"])
    assert set(entry["forget_nll"]) == {"tofu", *TASK_PARTS}
    assert set(entry["targets"]) >= {"hazard/hazard_mc <= 0.4", "book/verbmem_retain >= 0.9"}
    model, tok = load(tmp_path / "m", device="cpu")
    assert sum(p.numel() for p in model.parameters()) == entry["parameters"]
    assert tok.get_vocab() == tokenizer.get_vocab() and not model.training
    assert next(model.parameters()).dtype == torch.float32


def test_data_root_follows_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GEFFECT_DATA", str(tmp_path))
    assert data_root() == tmp_path
    with pytest.raises(FileNotFoundError, match="build-world"):
        load("tiny")
    monkeypatch.delenv("GEFFECT_DATA")
    assert (data_root() / "world" / "manifest.json").is_file()


def test_generate_world_is_used_by_the_tokenizer_texts() -> None:
    splits = generate_world(seed=0, n_authors=2, qa_per_author=2, n_countries=2, n_perturbed=3)
    texts = list(world_texts(splits))
    assert texts[0] == f"Question: {splits['full'][0]['question']}\nAnswer:"
    assert f" {splits['idk'][-1]['answer']}" == texts[-1]
