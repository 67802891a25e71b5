"""A small byte-level BPE tokenizer trained on the world's text.

Byte-level BPE (the GPT-2 scheme, via the ``tokenizers`` library) is lossless:
any string round-trips, so TOFU or user text still encodes, and decoded model
output is exactly the text the model produced. With a vocabulary of a few
thousand pieces nearly every word of the world, invented names included, is one
or two tokens, which keeps sequences short and memorisation cheap for the tiny
models. It is saved as a ``PreTrainedTokenizerFast`` with ``<pad>``, ``<s>``
(prepended to every encoded text), ``</s>`` and ``<unk>``, and no chat template.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from geffect.data.encoding import ANSWER_FORMAT, PROMPT_FORMAT

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)


TRAINING_SPLITS = ("full", "world_facts", "idk")


def world_texts(world: Mapping[str, Iterable[Mapping[str, Any]]],
                splits: Iterable[str] = TRAINING_SPLITS) -> Iterator[str]:
    """Every prompt and answer string in ``splits`` of the world (the tokenizer's training text)."""
    for name in splits:
        for row in world[name]:
            if name == "idk":
                yield ANSWER_FORMAT.format(answer=row["answer"])
                continue
            for q in (row["question"], row["paraphrased_question"]):
                yield PROMPT_FORMAT.format(question=q)
            for a in (row["answer"], row["paraphrased_answer"], *row["perturbed_answer"]):
                yield ANSWER_FORMAT.format(answer=a)


def task_texts(tasks: Mapping[str, Mapping[str, Iterable[Mapping[str, Any]]]]) -> Iterator[str]:
    """Every string of every split of the tasks, as a model reads it.

    QA rows (and multiple-choice rows, one answer per option) in the QA format, prompt rows
    as prompt then response, text rows as they are.
    """
    for splits in tasks.values():
        for rows in splits.values():
            for row in rows:
                if "choices" in row:
                    yield PROMPT_FORMAT.format(question=row["question"])
                    yield from (ANSWER_FORMAT.format(answer=c) for c in row["choices"])
                elif "question" in row:
                    yield PROMPT_FORMAT.format(question=row["question"])
                    yield ANSWER_FORMAT.format(answer=row["answer"])
                elif "prompt" in row:
                    yield row["prompt"] + row["response"]
                else:
                    yield row["text"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2,
                    out_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts``; save it to ``out_dir`` if given.

    Deterministic for the same texts in the same order.
    """
    core = Tokenizer(models.BPE(unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    bos_id = core.token_to_id(BOS)
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=256, clean_up_tokenization_spaces=False,
    )
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer
