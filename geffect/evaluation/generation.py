"""Greedy answers to questions, in the shared QA prompt format.

Prompts come from :func:`geffect.data.encode_prompt`, are left-padded into
batches and continued greedily by ``model.generate`` until EOS or
``max_new_tokens``; the decoded continuation (special tokens dropped, outer
whitespace stripped) is the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from geffect.data.encoding import collate, encode_prompt, pad_id


@torch.no_grad()
def greedy_answers(model: Any, tokenizer: Any, questions: Sequence[str], max_new_tokens: int = 32,
                   batch_size: int = 64, progress: bool = False) -> list[str]:
    """Greedy-decoded answers of ``model`` to ``questions`` (one string per question)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    answers: list[str] = []
    starts = range(0, len(questions), batch_size)
    for start in tqdm(starts, desc="greedy answers", disable=not progress):
        chunk = questions[start:start + batch_size]
        prompts = [{"input_ids": encode_prompt(tokenizer, q)} for q in chunk]
        for p in prompts:
            p["attention_mask"] = [1] * len(p["input_ids"])
        batch = collate(prompts, tokenizer, padding_side="left")
        out = model.generate(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id(tokenizer),
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        answers.extend(t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    model.train(was_training)
    return answers
