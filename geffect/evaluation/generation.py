"""Continuations of prompts, greedy or seeded sampling: QA answers, text continuations, completions.

Prompts are token ids (from :func:`geffect.data.encode_prompt` for questions, or any
encoder), left-padded into batches and continued by ``model.generate`` until EOS or
``max_new_tokens``; the decoded continuation (special tokens dropped, outer whitespace
stripped) is returned. Sampling is seeded: batch ``b`` draws under
``torch.manual_seed(seed + b)`` inside ``torch.random.fork_rng``, so the same seed,
prompts and batch size give the same texts, and the caller's random state is untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from geffect.data.encoding import collate, encode_prompt, pad_id
from geffect.data.lengths import LengthPolicy


@dataclass(frozen=True)
class Sampling:
    """How to sample continuations: ``samples`` per prompt at ``temperature`` / nucleus ``top_p``."""

    temperature: float = 1.0
    top_p: float = 0.9
    samples: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.samples < 1:
            raise ValueError(f"need temperature > 0, 0 < top_p <= 1 and samples >= 1, got {self}")


@torch.no_grad()
def continue_prompts(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int = 32,
                     sampling: Sampling | None = None, batch_size: int = 64, progress: bool = False,
                     desc: str = "generating") -> list[str]:
    """Continuations of token-id ``prompts``: greedy when ``sampling`` is None, else ``sampling.samples``
    seeded samples per prompt (prompt-major order: all samples of prompt 0 first). A prompt that
    leaves fewer than ``max_new_tokens`` positions of the model's context loses its beginning, with
    one warning counting them."""
    repeats = 1 if sampling is None else sampling.samples
    prompts = LengthPolicy.for_model(model, tokenizer).fit_prompts(prompts, max_new_tokens, desc)
    expanded = [list(p) for p in prompts for _ in range(repeats)]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[str] = []
    starts = range(0, len(expanded), batch_size)
    for index, start in enumerate(tqdm(starts, desc=desc, disable=not progress, leave=False)):
        batch = collate([{"input_ids": p, "attention_mask": [1] * len(p)} for p in expanded[start:start + batch_size]],
                        tokenizer, padding_side="left")
        options = dict(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                       max_new_tokens=max_new_tokens, pad_token_id=pad_id(tokenizer),
                       eos_token_id=tokenizer.eos_token_id)
        if sampling is None:
            generated = model.generate(**options, do_sample=False)
        else:
            devices = [device] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(sampling.seed + index)
                generated = model.generate(**options, do_sample=True, temperature=sampling.temperature,
                                           top_p=sampling.top_p, top_k=0)
        new_tokens = generated[:, batch["input_ids"].shape[1]:]
        out.extend(t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    model.train(was_training)
    return out


def greedy_answers(model: Any, tokenizer: Any, questions: Sequence[str], max_new_tokens: int = 32,
                   batch_size: int = 64, progress: bool = False) -> list[str]:
    """Greedy-decoded answers of ``model`` to ``questions`` in the shared QA format."""
    prompts = [encode_prompt(tokenizer, q) for q in questions]
    return continue_prompts(model, tokenizer, prompts, max_new_tokens, None, batch_size, progress,
                            desc="greedy answers")
