"""QA encoding: label masking, the prompt-prefix property, chat templates and collate padding."""

from __future__ import annotations

import copy

import pytest
import torch

from geffect.data import (
    collate,
    encode_prompt,
    encode_qa,
    generate_world,
    train_tokenizer,
    world_texts,
)
from geffect.schema import IGNORE_INDEX

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def world():
    return generate_world(seed=0, n_authors=10, qa_per_author=20, n_countries=4, n_perturbed=3)


@pytest.fixture(scope="module")
def tokenizer(world):
    return train_tokenizer(world_texts(world), vocab_size=600)


@pytest.fixture(scope="module")
def chat_tokenizer(tokenizer):
    chat = copy.deepcopy(tokenizer)
    chat.chat_template = CHAT_TEMPLATE
    return chat


def test_tokenizer_special_tokens_and_lossless_round_trip(tokenizer, world) -> None:
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token) == ("<pad>", "<s>", "</s>")
    assert len({tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}) == 3
    assert tokenizer.chat_template is None
    text = world["full"][0]["answer"] + " Ünïcode ✓ text never seen"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_tokenizer_training_is_deterministic(world) -> None:
    a = train_tokenizer(world_texts(world), vocab_size=600)
    b = train_tokenizer(world_texts(world), vocab_size=600)
    assert a.get_vocab() == b.get_vocab()


def test_encode_qa_masks_prompt_and_keeps_answer_and_eos(tokenizer, world) -> None:
    row = world["full"][7]
    enc = encode_qa(tokenizer, row["question"], row["answer"])
    prompt = encode_prompt(tokenizer, row["question"])
    n = len(prompt)
    assert enc["input_ids"][:n] == prompt
    assert prompt[0] == tokenizer.bos_token_id
    assert tokenizer.decode(prompt, skip_special_tokens=True) == f"Question: {row['question']}\nAnswer:"
    assert enc["labels"][:n] == [IGNORE_INDEX] * n
    assert enc["labels"][n:] == enc["input_ids"][n:]
    assert enc["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(enc["input_ids"][n:-1]) == " " + row["answer"]
    assert enc["attention_mask"] == [1] * len(enc["input_ids"])


def test_encode_qa_truncates_only_the_answer(tokenizer, world) -> None:
    row = world["full"][3]
    n = len(encode_prompt(tokenizer, row["question"]))
    enc = encode_qa(tokenizer, row["question"], row["answer"], max_length=n + 2)
    assert len(enc["input_ids"]) == n + 2 and enc["labels"][n:] == enc["input_ids"][n:]
    with pytest.raises(ValueError, match="does not fit max_length"):
        encode_qa(tokenizer, row["question"], row["answer"], max_length=n)


def test_chat_template_is_used_when_present(chat_tokenizer) -> None:
    prompt = encode_prompt(chat_tokenizer, "Who wrote it?")
    text = chat_tokenizer.decode(prompt)
    assert text == "<s><|user|>Who wrote it?\n<|assistant|>"
    assert prompt.count(chat_tokenizer.bos_token_id) == 1  # the template's BOS, not a second one
    enc = encode_qa(chat_tokenizer, "Who wrote it?", "Nobody did.")
    n = len(prompt)
    assert enc["input_ids"][:n] == prompt and enc["labels"][:n] == [IGNORE_INDEX] * n
    assert chat_tokenizer.decode(enc["labels"][n:]) == "Nobody did.</s>"


def test_encode_qa_needs_eos(tokenizer) -> None:
    broken = copy.deepcopy(tokenizer)
    broken.eos_token = None
    with pytest.raises(ValueError, match="no eos_token"):
        encode_qa(broken, "q?", "a")


@pytest.mark.parametrize("side", ["right", "left"])
def test_collate_pads_each_key_on_the_requested_side(tokenizer, side: str) -> None:
    examples = [encode_qa(tokenizer, "Where?", "Here and there."), encode_qa(tokenizer, "Who is it?", "Me.")]
    examples[0]["idk"] = encode_qa(tokenizer, "Where?", "I have no idea.")
    examples[1]["idk"] = encode_qa(tokenizer, "Who is it?", "No clue at all, sorry.")
    for i, ex in enumerate(examples):
        ex["index"] = i
    batch = collate(examples, tokenizer, padding_side=side)
    width = max(len(ex["input_ids"]) for ex in examples)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, width)
    assert batch["index"].tolist() == [0, 1]
    for b, ex in ((batch, examples), (batch["idk"], [e["idk"] for e in examples])):
        for i, e in enumerate(ex):
            n, w = len(e["input_ids"]), b["input_ids"].shape[1]
            real = slice(0, n) if side == "right" else slice(w - n, w)
            pad = slice(n, w) if side == "right" else slice(0, w - n)
            assert b["input_ids"][i, real].tolist() == e["input_ids"]
            assert b["labels"][i, real].tolist() == e["labels"]
            assert b["attention_mask"][i].sum().item() == n
            assert torch.all(b["input_ids"][i, pad] == tokenizer.pad_token_id)
            assert torch.all(b["labels"][i, pad] == IGNORE_INDEX)
    with pytest.raises(ValueError, match="padding_side"):
        collate(examples, tokenizer, padding_side="middle")
