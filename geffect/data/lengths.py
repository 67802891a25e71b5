"""Input lengths: the most positions a model takes, and what happens to rows that are longer.

A causal LM is built for a number of positions (``max_position_embeddings`` of its configuration,
or ``n_positions``, ``max_seq_len``, ... in some families); its tokenizer may cap inputs further
(``model_max_length``, unless that is the "no limit" sentinel). Feeding a longer input is not an
error to PyTorch, it is silent extrapolation (RoPE far past its range, learned position tables
indexed out of range), so geffect decides instead: rows longer than the limit are truncated at
the end of their target (the prompt is never cut) and one warning per data stream counts them,
or, with strict lengths, the first such row is an error that names it. The same policy serves
training batches, probes and evaluation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from geffect.errors import InputError

POSITION_FIELDS = ("max_position_embeddings", "n_positions", "max_seq_len", "max_sequence_length", "seq_length",
                   "n_ctx")
NO_LIMIT = 10**9  # tokenizers without a limit report int(1e30); anything this large means "none"


class LengthWarning(UserWarning):
    """Some inputs were longer than the model's context and were truncated."""


class LengthError(InputError):
    """An input is longer than the model's context and strict lengths were asked for."""


def model_context(model_or_config: Any) -> int | None:
    """The number of positions a model (or its configuration) is built for; None if it does not say."""
    config = getattr(model_or_config, "config", model_or_config)
    for candidate in (config, getattr(config, "text_config", None)):
        if candidate is None:
            continue
        for field in POSITION_FIELDS:
            value = getattr(candidate, field, None)
            if isinstance(value, int) and not isinstance(value, bool) and 0 < value < NO_LIMIT:
                return value
    return None


def tokenizer_context(tokenizer: Any) -> int | None:
    """The tokenizer's ``model_max_length`` when it sets one."""
    value = getattr(tokenizer, "model_max_length", None)
    return int(value) if isinstance(value, int) and 0 < value < NO_LIMIT else None


def context_length(model: Any = None, tokenizer: Any = None) -> int | None:
    """The smaller of the model's and the tokenizer's limits (None when neither sets one)."""
    known = [n for n in (model_context(model) if model is not None else None,
                         tokenizer_context(tokenizer) if tokenizer is not None else None) if n]
    return min(known) if known else None


Encode = Callable[[Mapping[str, Any], "int | None"], dict]


class LengthPolicy:
    """Truncate (with one warning per stream) or refuse rows longer than ``limit`` tokens.

    ``limit`` None means no known limit (nothing is checked). ``source`` says where the limit
    comes from, for the messages.
    """

    def __init__(self, limit: int | None, strict: bool = False, source: str = "the model's context") -> None:
        if limit is not None and (not isinstance(limit, int) or limit < 2):
            raise InputError(f"max_length must be an integer of at least 2, got {limit!r}")
        self.limit, self.strict, self.source = limit, strict, source
        self._warned: set[str] = set()

    @classmethod
    def for_model(cls, model: Any = None, tokenizer: Any = None, max_length: int | None = None,
                  strict: bool = False) -> LengthPolicy:
        """The policy of a run: ``max_length`` if given (at most the context), else the context."""
        context = context_length(model, tokenizer)
        if max_length is None:
            return cls(context, strict, f"the model's context of {context} positions")
        if context is not None and max_length > context:
            raise InputError(f"max_length={max_length} is longer than the model's context of {context} positions; "
                             f"use at most {context}")
        return cls(max_length, strict, f"max_length={max_length}")

    def encode(self, encode: Encode, row: Mapping[str, Any], what: str, index: int | str) -> tuple[dict, int | None]:
        """``encode(row, max_length)`` within the limit: (example, full length if it was truncated else None)."""
        example = encode(row, None)
        length = len(example["input_ids"])
        if self.limit is None or length <= self.limit:
            return example, None
        if self.strict:
            raise LengthError(f"{what}, row {index}: {length} tokens, longer than {self.source} "
                              "(strict lengths: shorten the row, or drop --strict-lengths to truncate it)")
        try:
            return encode(row, self.limit), length
        except ValueError as err:  # the prompt alone does not fit: nothing left to learn or score
            raise LengthError(f"{what}, row {index}: {length} tokens, longer than {self.source}, and its prompt "
                              f"alone does not fit ({err})") from None

    def encode_all(self, encode: Encode, rows: Iterable[Mapping[str, Any]], what: str) -> list[dict]:
        """Every row within the limit; one :class:`LengthWarning` counts the truncated ones."""
        examples, cut = [], []
        for index, row in enumerate(rows):
            example, length = self.encode(encode, row, what, index)
            examples.append(example)
            if length is not None:
                cut.append((index, length))
        if cut:
            self.warn(what, len(cut), len(examples), cut)
        return examples

    def fit_prompts(self, prompts: Sequence[Sequence[int]], room: int, what: str) -> list[list[int]]:
        """Prompts that leave ``room`` positions for generated tokens: longer ones lose their beginning
        (the end is what the continuation follows), counted in one warning; strict: an error."""
        prompts = [list(p) for p in prompts]
        if self.limit is None:
            return prompts
        if room >= self.limit:
            raise InputError(f"{what}: {room} new tokens do not fit {self.source}")
        keep = self.limit - room
        cut = [(i, len(p)) for i, p in enumerate(prompts) if len(p) > keep]
        if cut and self.strict:
            index, length = cut[0]
            raise LengthError(f"{what}, prompt {index}: {length} tokens + {room} to generate, longer than "
                              f"{self.source} (strict lengths)")
        if cut:
            self.warn(what, len(cut), len(prompts), cut, at="the start of the prompt")
        return [p[-keep:] if len(p) > keep else p for p in prompts]

    def warn(self, what: str, count: int, total: int | None, cut: list[tuple[int | str, int]],
             at: str = "the end of their target") -> None:
        """One warning per ``what`` (later calls for the same stream are silent)."""
        if what in self._warned:
            return
        self._warned.add(what)
        index, longest = max(cut, key=lambda item: item[1])
        share = f"{count} of {total} rows" if total is not None else f"{count} row(s) so far"
        warnings.warn(f"{what}: {share} longer than {self.source} were truncated at {at} "
                      f"(longest: row {index}, {longest} tokens); set strict_lengths (--strict-lengths) to refuse "
                      "them instead", LengthWarning, stacklevel=3)
