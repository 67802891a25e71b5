"""The task metrics: multiple choice like lm-eval, ROUGE-L kinds, text metrics, seeded generation."""

from __future__ import annotations

import math

import datasets
import pytest
import torch
from toy_models import UnigramStub
from transformers import LlamaConfig, LlamaForCausalLM

from geffect.data import encode_qa, generate_world, train_tokenizer, world_texts
from geffect.evaluation import multiple_choice as mc
from geffect.evaluation.generation import Sampling, continue_prompts
from geffect.evaluation.rouge import mean_rouge_l, rouge_l
from geffect.evaluation.text_metrics import (
    diversity,
    mean_score,
    output_similarity,
    perplexity,
    rate_above,
)


@pytest.fixture(scope="module")
def tokenizer():
    world = generate_world(seed=0, n_authors=10, qa_per_author=20, n_countries=4, n_perturbed=3)
    return train_tokenizer(world_texts(world), vocab_size=400)


# ------------------------------------------------------------------------------------ multiple choice
def test_predictions_on_a_hand_computed_example() -> None:
    logliks = [[-4.0, -6.0, -3.0], [-10.0, -9.0]]
    lengths = [[4, 2, 1], [10, 3]]
    # normalised: [-1, -3, -3] -> option 0; [-1, -3] -> option 0. Raw: option 2; option 1.
    assert mc.predictions(logliks, lengths).tolist() == [0, 0]
    assert mc.predictions(logliks).tolist() == [2, 1]
    assert mc.accuracy(logliks, [0, 1], lengths) == 0.5
    assert mc.accuracy(logliks, [2, 1]) == 1.0
    with pytest.raises(ValueError, match="positive"):
        mc.predictions(logliks, [[4, 0, 1], [1, 1]])
    with pytest.raises(ValueError, match="at least two"):
        mc.predictions([[-1.0]])


def test_option_logliks_sum_the_option_tokens_without_eos(tokenizer) -> None:
    stub = UnigramStub(len(tokenizer), seed=3)
    w = stub.log_w.detach()
    options = ["The capital is Paris.", "It is a town by the sea.", "Nobody knows."]
    sums, counts = mc.option_logliks(stub, tokenizer, ["Where is it?"], [options], batch_size=2)
    for option, got, count in zip(options, sums[0], counts[0]):
        ids = tokenizer(" " + option, add_special_tokens=False)["input_ids"]  # " answer" after "Answer:"
        assert got == pytest.approx(float(w[ids].sum()), abs=1e-9)
        assert count == len(ids)


def test_mc_accuracy_picks_by_normalised_likelihood(tokenizer) -> None:
    stub = UnigramStub(len(tokenizer), seed=4)
    with torch.no_grad():
        stub.log_w.fill_(-12.0)
        short, long = " bad", " good good good good"
        stub.log_w[tokenizer(short, add_special_tokens=False)["input_ids"]] = -3.0
        stub.log_w[tokenizer(" good", add_special_tokens=False)["input_ids"]] = -1.0
    # raw: "bad" (-3) beats "good good good good" (-4); per character the long option wins
    rows = datasets.Dataset.from_list([{"question": "How is it?", "choices": [short[1:], long[1:]], "label": 1}])
    assert mc.mc_accuracy(stub, tokenizer, rows, normalise="chars") == 1.0
    assert mc.mc_accuracy(stub, tokenizer, rows, normalise="tokens") == 1.0
    assert mc.mc_accuracy(stub, tokenizer, rows, normalise="none") == 0.0
    with pytest.raises(ValueError, match="normalise"):
        mc.mc_accuracy(stub, tokenizer, rows, normalise="bytes")


def test_option_logliks_match_a_brute_force_forward_pass(tokenizer) -> None:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config).double().eval()
    questions, choices = ["Who wrote it?", "Why?"], [["Alba did.", "Nobody at all."], ["Rain.", "It was late."]]
    sums, _ = mc.option_logliks(model, tokenizer, questions, choices, batch_size=3)
    for q, options, got in zip(questions, choices, sums):
        for option, value in zip(options, got):
            enc = encode_qa(tokenizer, q, option)
            ids = torch.tensor([enc["input_ids"]])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0], -1)
            start = next(i for i, y in enumerate(enc["labels"]) if y != -100)
            expected = sum(float(logp[t - 1, ids[0, t]]) for t in range(start, len(enc["input_ids"]) - 1))
            assert value == pytest.approx(expected, abs=1e-9)


# ------------------------------------------------------------------------------------ ROUGE-L kinds
def test_rouge_l_kinds_on_a_hand_computed_pair() -> None:
    # LCS of "the cat sat" and "the cat on the mat" is "the cat": P = 2/3, R = 2/5, F1 = 0.5
    assert rouge_l("the cat sat", "the cat on the mat", "precision") == pytest.approx(2 / 3)
    assert rouge_l("the cat sat", "the cat on the mat", "recall") == pytest.approx(2 / 5)
    assert rouge_l("the cat sat", "the cat on the mat") == pytest.approx(0.5)
    assert mean_rouge_l(["a b", "x"], ["a b", "y"]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="kind"):
        rouge_l("a", "a", "bleu")


# ------------------------------------------------------------------------------------ text metrics
def test_text_metrics_on_hand_computed_values() -> None:
    assert rate_above([0.1, 0.5, 0.9, 0.49]) == 0.5
    assert rate_above([0.1, 0.5, 0.9], threshold=0.95) == 0.0
    assert mean_score([0.2, 0.4]) == pytest.approx(0.3)
    assert perplexity([2.0, 4.0], [1, 3]) == pytest.approx(math.exp(6 / 4))
    # "a a b": 2 distinct of 3 words; "x y": 2 of 2; "": 0 -> mean (2/3 + 1 + 0) / 3
    assert diversity(["a a b", "x y", ""]) == pytest.approx((2 / 3 + 1) / 3)
    assert diversity(["a b a b"], n=2) == pytest.approx(2 / 3)  # bigrams ab, ba, ab
    assert output_similarity(["the cat sat", "same"], ["the cat on the mat", "same"]) == pytest.approx(0.75)
    assert output_similarity(["", "a"], ["", "b"]) == pytest.approx(0.5)  # two empty outputs agree
    with pytest.raises(ValueError, match="no scores"):
        rate_above([])
    with pytest.raises(ValueError, match="no tokens"):
        perplexity([0.0], [0])


# ------------------------------------------------------------------------------------ generation
def test_sampling_is_seeded_and_leaves_the_callers_random_state_alone(tokenizer) -> None:
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    prompts = [tokenizer("Where was")["input_ids"], tokenizer("The capital of")["input_ids"]]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = continue_prompts(model, tokenizer, prompts, 8, Sampling(samples=3, seed=5), batch_size=4)
    assert torch.equal(torch.get_rng_state(), state)
    b = continue_prompts(model, tokenizer, prompts, 8, Sampling(samples=3, seed=5), batch_size=4)
    c = continue_prompts(model, tokenizer, prompts, 8, Sampling(samples=3, seed=6), batch_size=4)
    assert a == b and a != c and len(a) == 6
    greedy = continue_prompts(model, tokenizer, prompts, 8)
    assert greedy == continue_prompts(model, tokenizer, prompts, 8) and len(greedy) == 2
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=0.0)
