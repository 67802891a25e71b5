"""Inputs longer than the model's context: where the limit comes from, truncation with one
warning that counts the rows, or an error with strict lengths — for training data, probes and
evaluation alike (issue 12; issue 13 case 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
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


# -- wired in: training data and probes (CLI), evaluation, generation, the engine ------------------------

REPO = Path(__file__).resolve().parents[1]
LONG = " ".join(["the ledger of the old harbour keeps every name it was ever given"] * 300)  # ~5,000 tokens


def geffect_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", "import sys; from geffect.cli import main; sys.exit(main())", *args],
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def forget_file(tmp_path_factory) -> Path:
    """Six QA rows, two of them with an answer far longer than tiny's 256 positions."""
    import geffect

    world = geffect.load_world()["forget10"].select(range(6))
    rows = [{"question": r["question"], "answer": LONG if i in (1, 4) else r["answer"]} for i, r in enumerate(world)]
    path = tmp_path_factory.mktemp("data") / "long.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_unlearn_truncates_long_training_rows_with_one_warning(forget_file, tmp_path):
    out = tmp_path / "run"
    done = geffect_cli("unlearn", "--objective", "ga", "--forget", str(forget_file), "--holdout", "0",
                       "--steps", "2", "--batch-size", "2", "--probe-size", "6", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    warned = [line for line in done.stderr.splitlines() if "LengthWarning" in line]
    assert len(warned) == 2, done.stderr  # the forget split, and the forget probe on it
    assert any("2 of 6 rows longer than the model's context of 256 positions" in w for w in warned)
    assert any("probe 'forget'" in w for w in warned)
    from geffect.training.run import Run

    assert Run(out).status == "finished"


def test_strict_lengths_refuse_the_run_in_one_line(forget_file, tmp_path):
    done = geffect_cli("unlearn", "--objective", "ga", "--forget", str(forget_file), "--holdout", "0",
                       "--steps", "2", "--strict-lengths", "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    message = done.stderr.strip().splitlines()[-1]  # (above it: the model's loading bar)
    assert message.startswith("geffect unlearn: error: forget ")
    assert "forget" in message and "row 1:" in message and "longer than the model's context of 256" in message


def test_max_length_beyond_the_context_is_bad_input(forget_file, tmp_path):
    done = geffect_cli("unlearn", "--objective", "ga", "--forget", str(forget_file), "--holdout", "0",
                       "--steps", "1", "--max-length", "4096", "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and "max_length=4096 is longer than the model's context of 256" in done.stderr


@pytest.fixture(scope="module")
def tiny():
    import geffect

    return geffect.load_model("tiny", device="cpu")


def test_evaluation_scores_long_rows_within_the_context(tiny):
    from geffect.evaluation.scoring import row_nlls

    model, tokenizer = tiny
    rows = [{"question": "Who kept the ledger?", "answer": LONG}, {"question": "Q?", "answer": "A."}]
    with pytest.warns(LengthWarning, match="1 of 2 rows longer than the model's context of 256"):
        nlls = row_nlls(model, tokenizer, rows)
    assert np.isfinite(nlls).all()
    strict = LengthPolicy.for_model(model, tokenizer, strict=True)
    with pytest.raises(LengthError, match="row 0"):
        row_nlls(model, tokenizer, rows, lengths=strict)


def test_generation_keeps_the_end_of_long_prompts(tiny):
    from geffect.data.encoding import encode_prompt
    from geffect.evaluation.generation import continue_prompts

    model, tokenizer = tiny
    prompt = encode_prompt(tokenizer, LONG + " Who kept the ledger?")
    with pytest.warns(LengthWarning, match="truncated at the start of the prompt"):
        texts = continue_prompts(model, tokenizer, [prompt], max_new_tokens=8)
    assert len(texts) == 1


def test_the_engine_says_when_a_probe_is_longer_than_the_context(tiny):
    import geffect

    model, _ = tiny
    ids = torch.randint(3, 3000, (2, 300))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    direction = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    with pytest.warns(LengthWarning, match="reach position 299 but LlamaForCausalLM has 256 positions"):
        geffect.gradient_effect(model, direction, batch)
