"""The tasks geffect ships with: ``tofu`` (fictitious authors, the default) and ``files`` (a user's own data).

The content tasks (hazard, toxicity, harm, book) register themselves in their own modules.
"""

from __future__ import annotations

import re
from typing import Any

from geffect.data.files import is_data_file
from geffect.errors import InputError
from geffect.tasks.context import EvalContext
from geffect.tasks.source import UnknownSplit
from geffect.tasks.task import Task


def read_tofu_split(split: str, data: str | None):
    """A split of the embedded world (``data=None``) or of a TOFU folder / hub id."""
    from geffect.data.store import load_world_split
    from geffect.data.tofu import load_tofu

    if data is None:
        try:
            return load_world_split(split)
        except KeyError as err:
            raise UnknownSplit(err.args[0]) from None
    try:
        return load_tofu(data, split)
    except FileNotFoundError as err:
        raise UnknownSplit(str(err)) from None


def tofu_evaluation(model: Any, tokenizer: Any, ctx: EvalContext) -> dict[str, Any]:
    """TOFU metrics: probability, ROUGE-L, truth ratio, forget quality, model utility."""
    from geffect.evaluation import evaluate

    if is_data_file(ctx.forget):
        raise InputError(f"the tofu evaluation scores TOFU forget splits (forget01/05/10), not the file "
                         f"{ctx.forget!r}: run with task 'files' (the default for a --forget FILE) for NLL and "
                         "ROUGE-L on its rows")
    options = dict(ctx.options)
    world = options.pop("world", ctx.data.data)
    return evaluate(model, tokenizer, world=world, forget_split=ctx.forget, retain_model=ctx.reference,
                    max_examples=ctx.max_examples, batch_size=ctx.batch_size, progress=ctx.progress, **options)


def complement_split(forget: str) -> str | None:
    """The retain split complementing a TOFU-style forget split (``forget10`` → ``retain90``)."""
    match = re.fullmatch(r"forget(\d\d)", forget)
    return f"retain{100 - int(match.group(1)):02d}" if match else None


TOFU = Task(
    name="tofu",
    description="TOFU-style fictitious authors: forget 10 % of the authors' QA, keep the rest (Maini et al. 2024)",
    forget="forget10",
    retain="retain90",
    evaluate=tofu_evaluation,
    reference_model="{model}-{retain}",
    retain_for=complement_split,
    reader=read_tofu_split,
)

FILES = Task(
    name="files",
    description="a user's own data: --forget FILE [--retain FILE] (JSONL, CSV, parquet or a hub id), "
                "10 % of their rows held out for evaluation",
    forget="forget",
    holdout=0.1,
)
