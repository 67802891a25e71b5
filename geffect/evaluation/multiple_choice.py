"""Multiple-choice accuracy scored like lm-eval: the option with the highest normalised log-likelihood.

Each option is scored as the continuation of its question in the shared QA format
(:func:`geffect.data.encode_qa`, without the EOS that closes a training answer): its
log-likelihood is the sum of its token log-probabilities. The prediction is the
argmax of the log-likelihood divided by a length (``normalise``): ``"chars"`` — the
option's character length, as lm-evaluation-harness's ``acc_norm`` does (Gao et al.,
"A framework for few-shot language model evaluation"); ``"tokens"`` — its token count;
``"none"`` — the raw sum (lm-eval's ``acc``). WMDP (Li et al. 2024) and MMLU are read
this way in the hazard task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from geffect.data.encoding import collate, encode_qa
from geffect.data.lengths import LengthPolicy
from geffect.objectives.terms import token_logprobs
from geffect.schema import IGNORE_INDEX

NORMALISATIONS = ("chars", "tokens", "none")


def predictions(logliks: Sequence[Sequence[float]], lengths: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """Index of the best option per question: argmax of loglik / length (lengths None: raw loglik)."""
    out = []
    for i, ll in enumerate(logliks):
        ll = np.asarray(ll, dtype=np.float64)
        if ll.ndim != 1 or ll.size < 2:
            raise ValueError(f"question {i} needs at least two option log-likelihoods, got {ll.tolist()}")
        if lengths is not None:
            norm = np.asarray(lengths[i], dtype=np.float64)
            if norm.shape != ll.shape or np.any(norm <= 0):
                raise ValueError(f"question {i}: lengths {norm.tolist()} must be positive, one per option")
            ll = ll / norm
        out.append(int(np.argmax(ll)))
    return np.asarray(out)


def accuracy(logliks: Sequence[Sequence[float]], labels: Sequence[int],
             lengths: Sequence[Sequence[float]] | None = None) -> float:
    """Share of questions whose best option (see :func:`predictions`) is the labelled one."""
    if len(logliks) != len(labels) or not labels:
        raise ValueError(f"{len(logliks)} questions but {len(labels)} labels")
    return float(np.mean(predictions(logliks, lengths) == np.asarray(labels)))


def _option_example(tokenizer: Any, question: str, option: str, max_length: int | None) -> dict[str, list[int]]:
    encoded = encode_qa(tokenizer, question, option, max_length)
    if max_length is None:  # (a truncated option has lost its EOS already)
        encoded["labels"][-1] = IGNORE_INDEX  # the EOS closing a training answer is not part of the option
    return encoded


@torch.no_grad()
def option_logliks(model: Any, tokenizer: Any, questions: Sequence[str], choices: Sequence[Sequence[str]],
                   batch_size: int = 64, progress: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per question: the summed log-likelihood of each option and its token count."""
    if len(questions) != len(choices):
        raise ValueError(f"{len(questions)} questions but {len(choices)} lists of choices")
    pairs = [{"question": q, "answer": o} for q, options in zip(questions, choices) for o in options]
    flat = LengthPolicy.for_model(model, tokenizer).encode_all(
        lambda pair, limit: _option_example(tokenizer, pair["question"], pair["answer"], limit), pairs,
        "multiple-choice options")
    order = sorted(range(len(flat)), key=lambda i: len(flat[i]["input_ids"]))
    sums, counts = np.empty(len(flat)), np.empty(len(flat))
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="options", disable=not progress, leave=False):
            index = order[start:start + batch_size]
            scored = token_logprobs(model, collate([flat[i] for i in index], tokenizer))
            sums[index] = scored.sequence().double().cpu().numpy()
            counts[index] = scored.counts.double().cpu().numpy()
    finally:
        model.train(was_training)
    bounds = np.cumsum([0] + [len(options) for options in choices])
    return ([sums[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
            [counts[a:b] for a, b in zip(bounds[:-1], bounds[1:])])


def mc_accuracy(model: Any, tokenizer: Any, split: Any, normalise: str = "chars", max_examples: int | None = None,
                batch_size: int = 64, progress: bool = False) -> float:
    """Accuracy of ``model`` on a multiple-choice split (columns ``question``, ``choices``, ``label``)."""
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
    rows = split if max_examples is None else split.select(range(min(max_examples, len(split))))
    missing = [c for c in ("question", "choices", "label") if c not in rows.column_names]
    if missing:
        raise ValueError(f"a multiple-choice split needs columns question, choices, label; lacks {missing}")
    logliks, counts = option_logliks(model, tokenizer, rows["question"], rows["choices"], batch_size, progress)
    if normalise == "chars":
        lengths = [[len(" " + o) for o in options] for options in rows["choices"]]
    elif normalise == "tokens":
        lengths = counts
    else:
        lengths = None
    return accuracy(logliks, rows["label"], lengths)
