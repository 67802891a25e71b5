"""Row kinds: the three shapes of data any split can hold, and one encoder for all of them.

* ``qa`` — ``question`` / ``answer`` (the TOFU schema; extra TOFU columns allowed): the shared
  QA format of :func:`geffect.data.encode_qa`, loss on the answer tokens and EOS.
* ``prompt`` — ``prompt`` / ``response``: the raw prompt text (the user turn when the tokenizer
  has a chat template) followed by the response, loss on the response tokens and EOS.
* ``text`` — ``text``: raw text, loss on every token of it (no EOS: a passage is a piece of a
  stream, not a finished turn). Raw-text unlearning, RMU-style corpora, books.

A row's *source* field is what conditions it (``question``, ``prompt``; none for text) and its
*target* field what is learned or forgotten (``answer``, ``response``, ``text``); forget views
and evaluation speak of these two roles so that they work on every kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from geffect.data.encoding import (
    _has_chat_template,
    _ids,
    _prompt_text,
    _require_eos,
    encode_prompt,
    encode_qa,
    fit_target,
)
from geffect.data.files import DataError
from geffect.schema import IGNORE_INDEX

# kind -> its required fields (source first, target last)
ROW_KINDS: dict[str, tuple[str, ...]] = {
    "qa": ("question", "answer"),
    "prompt": ("prompt", "response"),
    "text": ("text",),
}
KIND_NAMES = {"qa": "question/answer", "prompt": "prompt/response", "text": "text"}


class RowKindError(ValueError):
    """Columns that hold no recognised row kind."""


def row_kind(columns: Iterable[str]) -> str:
    """``"qa"``, ``"prompt"`` or ``"text"``: the row kind that ``columns`` hold.

    A kind is chosen as soon as one of its fields is present (``qa`` before ``prompt`` before
    ``text``), so that a half-present kind is reported as a missing field by
    :func:`check_row` rather than silently read as another kind.
    """
    present = set(columns)
    for kind, fields in ROW_KINDS.items():
        if present.intersection(fields):
            return kind
    expected = ", ".join(f"{' + '.join(f)}" for f in ROW_KINDS.values())
    raise RowKindError(f"no recognised row kind in columns {sorted(present)}: expected {expected}")


def source_field(kind: str) -> str | None:
    """The field that conditions a row of ``kind`` (``question`` / ``prompt``; None for text)."""
    fields = ROW_KINDS[kind]
    return fields[0] if len(fields) > 1 else None


def target_field(kind: str) -> str:
    """The field whose tokens carry the loss in a row of ``kind`` (``answer``/``response``/``text``)."""
    return ROW_KINDS[kind][-1]


def target_text(row: Mapping[str, Any]) -> str:
    """The target of a row of any kind: its answer, response or text."""
    return row[target_field(row_kind(row.keys()))]


def _encode_prompt_response(tokenizer: Any, prompt: str, response: str,
                            max_length: int | None) -> dict[str, list[int]]:
    eos = _require_eos(tokenizer)
    if _has_chat_template(tokenizer):
        prompt_text, special = _prompt_text(tokenizer, prompt)
    else:
        prompt_text, special = prompt, True
    prompt_ids = _ids(tokenizer, prompt_text, special)
    joint = _ids(tokenizer, prompt_text + response, special)
    if joint[: len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        target = joint[len(prompt_ids):]  # natural tokenization at the boundary
    else:
        target = _ids(tokenizer, response, False)
    target = fit_target(prompt_ids, target + [eos], max_length, prompt)
    return _pack(prompt_ids, target)


def _encode_text(tokenizer: Any, text: str, max_length: int | None) -> dict[str, list[int]]:
    ids = _ids(tokenizer, text, True)
    plain = _ids(tokenizer, text, False)
    # the special prefix (e.g. BOS) is context, never a label
    prefix = ids[: len(ids) - len(plain)] if ids[len(ids) - len(plain):] == plain else []
    target = ids[len(prefix):]
    return _pack(prefix, fit_target(prefix, target, max_length, text))


def _pack(prompt: list[int], target: list[int]) -> dict[str, list[int]]:
    input_ids = prompt + target
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids),
            "labels": [IGNORE_INDEX] * len(prompt) + target}


def encode_row(tokenizer: Any, row: Mapping[str, Any], max_length: int | None = None) -> dict[str, list[int]]:
    """``input_ids``, ``attention_mask`` and ``labels`` of one row of any kind (see the module docstring).

    ``max_length`` keeps at most that many positions, cutting the target's end (never the
    prompt); it is the single place where geffect truncates a training or probe example. A row
    left with no label a causal LM predicts (e.g. a one-token text under a tokenizer that adds
    no BOS) raises :class:`~geffect.data.files.DataError`.
    """
    kind = row_kind(row.keys())
    if kind == "qa":
        encoded = encode_qa(tokenizer, row["question"], row["answer"], max_length)
    elif kind == "prompt":
        encoded = _encode_prompt_response(tokenizer, row["prompt"], row["response"], max_length)
    else:
        encoded = _encode_text(tokenizer, row["text"], max_length)
    if all(label == IGNORE_INDEX for label in encoded["labels"][1:]):  # position 0 is never predicted
        hint = " (with a tokenizer that adds no BOS, a text row needs two tokens)" if kind == "text" else ""
        raise DataError(f"{KIND_NAMES[kind]} row {row[target_field(kind)][:40]!r} leaves no token to learn: "
                        f"every label is masked after the causal shift{hint}")
    return encoded


def generation_prompt(tokenizer: Any, row: Mapping[str, Any], prefix_fraction: float = 0.5) -> tuple[list[int], str]:
    """(prompt ids, reference continuation) for greedy generation from ``row``.

    qa: the question prompt and the answer; prompt: the prompt and the response; text: the
    first ``prefix_fraction`` of the text's tokens (at least one) and the decoded rest.
    """
    kind = row_kind(row.keys())
    if kind == "qa":
        return encode_prompt(tokenizer, row["question"]), row["answer"]
    encoded = encode_row(tokenizer, row)
    start = next(i for i, x in enumerate(encoded["labels"]) if x != IGNORE_INDEX)
    if kind == "prompt":
        return encoded["input_ids"][:start], row["response"]
    ids = encoded["input_ids"]
    cut = max(1, min(len(ids) - 1, start + max(1, round((len(ids) - start) * prefix_fraction))))
    return ids[:cut], tokenizer.decode(ids[cut:], skip_special_tokens=True).strip()
