"""Mean token NLLs of answers under a model: the one model-based input of TOFU's metrics.

Rows of any kind are encoded with ``geffect.data.encode_row`` (QA pairs in the shared QA
format: prompt masked, answer + EOS as labels), batched, and scored with the same per-instance NLL the
objectives and the G-effect engine use (``geffect.objectives.terms``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from geffect.data.encoding import collate
from geffect.data.lengths import LengthPolicy
from geffect.data.rows import encode_row
from geffect.objectives.terms import token_logprobs

__all__ = ["answer_nlls", "perturbed_nlls", "row_nlls"]


def answer_nlls(model: torch.nn.Module, tokenizer: Any, questions: Sequence[str], answers: Sequence[str],
                batch_size: int = 32, progress: bool = False, desc: str = "answer NLL") -> np.ndarray:
    """Mean token NLL of each answer given its question (float64 array, one per pair)."""
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    rows = [{"question": q, "answer": a} for q, a in zip(questions, answers)]
    return row_nlls(model, tokenizer, rows, batch_size, progress, desc)


@torch.no_grad()
def row_nlls(model: torch.nn.Module, tokenizer: Any, rows: Sequence[Mapping[str, Any]], batch_size: int = 32,
             progress: bool = False, desc: str = "NLL", lengths: LengthPolicy | None = None) -> np.ndarray:
    """Mean token NLL of each row's target (answer, response or text; ``geffect.data.encode_row``).

    Rows longer than the model's context are truncated at the end of their target with one
    warning (``lengths``: another :class:`~geffect.data.lengths.LengthPolicy`, e.g. strict).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = lengths or LengthPolicy.for_model(model, tokenizer)
    encoded = lengths.encode_all(lambda row, limit: encode_row(tokenizer, row, limit), rows, desc)
    # Score in order of length so that batches carry little padding; restore the order after.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    out = np.empty(len(encoded), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
            index = order[start:start + batch_size]
            batch = collate([encoded[i] for i in index], tokenizer, padding_side="right")
            nll = -token_logprobs(model, batch).mean()
            out[index] = nll.double().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def perturbed_nlls(model: torch.nn.Module, tokenizer: Any, questions: Sequence[str],
                   perturbed: Sequence[Sequence[str]], batch_size: int = 32,
                   progress: bool = False) -> list[np.ndarray]:
    """Mean token NLLs of each question's perturbed (wrong) answers: one array per question."""
    if len(questions) != len(perturbed):
        raise ValueError(f"{len(questions)} questions but {len(perturbed)} lists of perturbed answers")
    flat_q = [q for q, answers in zip(questions, perturbed) for _ in answers]
    flat_a = [a for answers in perturbed for a in answers]
    flat = answer_nlls(model, tokenizer, flat_q, flat_a, batch_size, progress, desc="perturbed NLL")
    bounds = np.cumsum([0] + [len(answers) for answers in perturbed])
    return [flat[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
