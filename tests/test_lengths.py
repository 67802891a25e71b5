"""Inputs longer than the model's context: where the limit comes from, truncation with one
warning that counts the rows, or an error with strict lengths — for training data, probes and
evaluation alike (issue 12; issue 13 case 6)."""

from __future__ import annotations

import warnings

import pytest
from transformers import GPT2Config, LlamaConfig

from geffect.data.lengths import (
    LengthError,
    LengthPolicy,
    LengthWarning,
    context_length,
    model_context,
    tokenizer_context,
)
from geffect.errors import InputError


class Tokenizer:
    def __init__(self, limit):
        self.model_max_length = limit


def test_the_limit_comes_from_the_model_and_the_tokenizer():
    llama = LlamaConfig(max_position_embeddings=128)
    assert model_context(llama) == 128
    assert model_context(GPT2Config(n_positions=64)) == 64
    assert tokenizer_context(Tokenizer(int(1e30))) is None  # "no limit" sentinel
    assert context_length(llama, Tokenizer(int(1e30))) == 128
    assert context_length(llama, Tokenizer(100)) == 100
    assert context_length(None, None) is None


def encode(row, max_length):
    """A stand-in for encode_row: two prompt tokens, then the row's target tokens (cut to fit)."""
    ids = [1, 2] + list(range(3, 3 + row["n"]))
    ids = ids if max_length is None else ids[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100, -100] + ids[2:]}


def test_long_rows_are_truncated_with_one_warning_counting_them():
    policy = LengthPolicy.for_model(LlamaConfig(max_position_embeddings=16), Tokenizer(int(1e30)))
    rows = [{"n": 5}, {"n": 40}, {"n": 14}, {"n": 15}]
    with pytest.warns(LengthWarning) as caught:
        examples = policy.encode_all(encode, rows, "forget split 'forget10'")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "forget split 'forget10': 2 of 4 rows" in message and "16 positions" in message
    assert "row 1, 42 tokens" in message
    assert [len(e["input_ids"]) for e in examples] == [7, 16, 16, 16]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy.encode_all(encode, rows, "forget split 'forget10'")  # the same stream warns once
        policy.encode_all(encode, [{"n": 3}], "probe 'retain'")  # nothing truncated: silent


def test_strict_lengths_refuse_the_first_long_row():
    policy = LengthPolicy.for_model(LlamaConfig(max_position_embeddings=16), strict=True)
    with pytest.raises(LengthError, match=r"probe 'forget', row 1: 42 tokens, longer than the model's context of 16"):
        policy.encode_all(encode, [{"n": 5}, {"n": 40}], "probe 'forget'")
    assert issubclass(LengthError, InputError)


def test_a_max_length_beyond_the_context_is_refused_and_a_shorter_one_used():
    config = LlamaConfig(max_position_embeddings=16)
    with pytest.raises(InputError, match="longer than the model's context of 16"):
        LengthPolicy.for_model(config, max_length=32)
    policy = LengthPolicy.for_model(config, max_length=8)
    with pytest.warns(LengthWarning, match="max_length=8"):
        assert len(policy.encode_all(encode, [{"n": 10}], "rows")[0]["input_ids"]) == 8
    assert LengthPolicy.for_model(None).limit is None  # nothing known: nothing checked
