"""One question-answer format for training, unlearning and evaluation alike.

Without a chat template the prompt is ``"Question: {q}\\nAnswer:"`` (with the
tokenizer's own special tokens, e.g. BOS) and the answer is ``" {a}"`` followed by
EOS. With a chat template the question is the user turn rendered with
``add_generation_prompt=True`` and the answer follows it, then EOS. Labels copy the
answer and EOS ids and mask the prompt with ``IGNORE_INDEX``; the prompt ids are
always an exact prefix of the full ids, so greedy generation from
:func:`encode_prompt` continues exactly where training put the answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from geffect.schema import BATCH_KEYS, IGNORE_INDEX

PROMPT_FORMAT = "Question: {question}\nAnswer:"
ANSWER_FORMAT = " {answer}"


def _has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _prompt_text(tokenizer: Any, question: str) -> tuple[str, bool]:
    """The prompt string and whether the tokenizer should add its special tokens to it."""
    if _has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
        return text, False  # the template already writes BOS and the turn markers
    return PROMPT_FORMAT.format(question=question), True


def _ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    ids = list(tokenizer(text, add_special_tokens=special)["input_ids"])
    eos = tokenizer.eos_token_id
    if special and ids and eos is not None and ids[-1] == eos:
        ids = ids[:-1]  # tokenizers that append EOS themselves: the prompt must stay open
    return ids


def _require_eos(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no eos_token; set one before encoding QA pairs")
    return int(tokenizer.eos_token_id)


def fit_target(prompt: list[int], target: list[int], max_length: int | None, what: str) -> list[int]:
    """The target ids that fit after ``prompt`` in ``max_length`` positions: geffect's one truncation rule.

    The prompt is never cut (a row whose prompt alone does not fit is an error, ``what`` names
    it); the target loses its end.
    """
    if max_length is None:
        return target
    if len(prompt) >= max_length:
        raise ValueError(f"prompt of {len(prompt)} tokens does not fit max_length={max_length}: {what[:60]!r}")
    return target[: max_length - len(prompt)]


def encode_prompt(tokenizer: Any, question: str) -> list[int]:
    """Token ids of the prompt for ``question``: greedy generation continues these to answer."""
    text, special = _prompt_text(tokenizer, question)
    return _ids(tokenizer, text, special)


def encode_qa(tokenizer: Any, question: str, answer: str, max_length: int | None = None) -> dict[str, list[int]]:
    """Encode one QA pair: ``input_ids``, ``attention_mask`` and ``labels`` (prompt masked).

    The answer is tokenized together with the prompt when that keeps the prompt ids
    as a prefix (natural tokenization at the boundary), else on its own and
    appended. ``max_length`` truncates the answer (never the prompt); EOS is kept
    only if it fits.
    """
    eos = _require_eos(tokenizer)
    prompt_text, special = _prompt_text(tokenizer, question)
    prompt = _ids(tokenizer, prompt_text, special)
    answer_text = answer if _has_chat_template(tokenizer) else ANSWER_FORMAT.format(answer=answer)
    joint = _ids(tokenizer, prompt_text + answer_text, special)
    if joint[: len(prompt)] == prompt and len(joint) > len(prompt):
        answer_ids = joint[len(prompt):]
    else:
        answer_ids = _ids(tokenizer, answer_text, False)
    answer_ids = fit_target(prompt, answer_ids + [eos], max_length, question)
    input_ids = prompt + answer_ids
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": [IGNORE_INDEX] * len(prompt) + answer_ids,
    }


def encode_pairs(tokenizer: Any, questions: Iterable[str], answers: Iterable[str],
                 max_length: int | None = None) -> list[dict[str, list[int]]]:
    """:func:`encode_qa` over paired sequences of questions and answers."""
    return [encode_qa(tokenizer, q, a, max_length) for q, a in zip(questions, answers, strict=True)]


def pad_id(tokenizer: Any) -> int:
    """The id used for padding: the pad token, else EOS (common for decoder-only models)."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return _require_eos(tokenizer)


def _pad(rows: Sequence[Sequence[int]], value: int, side: str) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if not row:
            continue
        if side == "right":
            out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        else:
            out[i, width - len(row):] = torch.as_tensor(row, dtype=torch.long)
    return out


def collate(examples: Sequence[Mapping[str, Any]], tokenizer: Any, padding_side: str = "right") -> dict[str, Any]:
    """Pad encoded examples into a batch of tensors (``padding_side`` "right" or "left").

    ``input_ids`` are padded with the pad id, ``attention_mask`` with 0 and
    ``labels`` with ``IGNORE_INDEX``. A key whose values are themselves encoded
    examples (e.g. ``"idk"``) becomes a nested batch padded the same way; other
    keys become tensors when they hold numbers, lists otherwise.
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if not examples:
        raise ValueError("collate needs at least one example")
    fill = {"input_ids": pad_id(tokenizer), "attention_mask": 0, "labels": IGNORE_INDEX}
    batch: dict[str, Any] = {}
    for key in examples[0]:
        values = [ex[key] for ex in examples]
        if key in BATCH_KEYS:
            batch[key] = _pad(values, fill[key], padding_side)
        elif all(isinstance(v, Mapping) for v in values):
            batch[key] = collate(values, tokenizer, padding_side)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch
