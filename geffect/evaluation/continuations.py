"""What a model generates from a task's rows, and how it scores: the inputs of the generation metrics.

Rows of any kind give a prompt and a reference continuation
(:func:`geffect.data.generation_prompt`: the question, the prompt, or a text's first half).
:func:`generate` continues them (greedy or seeded sampling, see
:mod:`geffect.evaluation.generation`); :func:`continuation_nlls` scores given
continuations of the prompts under a model (fluency is their perplexity under the
untouched target); :func:`reference_rouge` is the ROUGE-L of the continuations against
the references (VerbMem and KnowMem, Shi et al. 2024).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geffect.data.encoding import collate
from geffect.data.rows import generation_prompt
from geffect.evaluation.generation import Sampling, continue_prompts
from geffect.evaluation.rouge import rouge_l
from geffect.objectives.terms import token_logprobs
from geffect.schema import IGNORE_INDEX

GENERATION_MARGIN = 8  # tokens allowed beyond the longest reference


@dataclass
class Generations:
    """Continuations of rows: ``prompts`` (token ids) and ``texts`` repeated per sample, with references."""

    prompts: list[list[int]]
    texts: list[str]
    references: list[str]


def _tokens(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` as a continuation (after one space)."""
    return tokenizer(" " + text.lstrip(), add_special_tokens=False)["input_ids"]


def generate(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], sampling: Sampling | None = None,
             max_new_tokens: int | None = None, batch_size: int = 64, progress: bool = False,
             reference_length: bool = False) -> Generations:
    """Continue every row's prompt (``sampling.samples`` times each when sampling).

    ``max_new_tokens`` defaults to the longest reference plus EOS and a margin of
    :data:`GENERATION_MARGIN` tokens. ``reference_length=True`` cuts each continuation to
    its reference's token count instead, as MUSE's VerbMem compares a passage's next
    tokens with the model's (a passage has no end for the model to stop at).
    """
    if not rows:
        raise ValueError("no rows to generate from")
    prompts, references = map(list, zip(*(generation_prompt(tokenizer, row) for row in rows)))
    lengths = [len(_tokens(tokenizer, r)) for r in references]
    if max_new_tokens is None:
        max_new_tokens = max(lengths) + (0 if reference_length else 1 + GENERATION_MARGIN)
    texts = continue_prompts(model, tokenizer, prompts, max_new_tokens, sampling, batch_size, progress)
    repeats = 1 if sampling is None else sampling.samples
    if reference_length:
        budgets = [n for n in lengths for _ in range(repeats)]
        texts = [tokenizer.decode(_tokens(tokenizer, t)[:n]).strip() for t, n in zip(texts, budgets)]
    return Generations([p for p in prompts for _ in range(repeats)], texts,
                       [r for r in references for _ in range(repeats)])


@torch.no_grad()
def continuation_nlls(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], texts: Sequence[str],
                      batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Summed NLL and token count of each text as the continuation of its prompt (no EOS).

    A text is re-tokenised after a space (generations are stripped when decoded); an empty
    text has zero tokens and zero NLL.
    """
    if len(prompts) != len(texts):
        raise ValueError(f"{len(prompts)} prompts but {len(texts)} texts")
    examples = []
    for prompt, text in zip(prompts, texts):
        target = tokenizer(" " + text, add_special_tokens=False)["input_ids"] if text else []
        ids = list(prompt) + list(target)
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                         "labels": [IGNORE_INDEX] * len(prompt) + list(target)})
    sums, counts = np.zeros(len(examples)), np.zeros(len(examples), dtype=np.int64)
    scored = [i for i, ex in enumerate(examples) if len(ex["input_ids"]) > len(prompts[i])]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(scored), batch_size):
            index = scored[start:start + batch_size]
            logp = token_logprobs(model, collate([examples[i] for i in index], tokenizer))
            sums[index] = -logp.sequence().double().cpu().numpy()
            counts[index] = logp.counts.cpu().numpy()
    finally:
        model.train(was_training)
    return sums, counts


def reference_rouge(generations: Generations, kind: str = "f1") -> float:
    """Mean ROUGE-L ``kind`` of the continuations against their references (rows with an empty
    reference are skipped)."""
    pairs = [(t, r) for t, r in zip(generations.texts, generations.references) if r.strip()]
    if not pairs:
        raise ValueError("no row has a reference continuation to compare with")
    return float(np.mean([rouge_l(t, r, kind) for t, r in pairs]))


def fluency(base_model: Any, tokenizer: Any, generations: Generations, batch_size: int = 64) -> float:
    """Perplexity of the continuations under ``base_model`` (the untouched target): low is fluent."""
    from geffect.evaluation.text_metrics import perplexity

    sums, counts = continuation_nlls(base_model, tokenizer, generations.prompts, generations.texts, batch_size)
    return perplexity(sums, counts) if counts.sum() > 0 else float("nan")
