"""Fine-tune a tiny causal LM until it has memorised its training rows.

Plain supervised fine-tuning on the label tokens only (prompts are masked by
:func:`geffect.data.encode_row`): AdamW with linear warm-up and cosine decay, seeded
shuffling, an epoch budget. Training stops early by a caller's ``stop`` rule (the shipped
models stop once their recall targets hold, see :mod:`geffect.models.knowledge`), or
without one once nearly every training sequence is reproduced exactly under teacher
forcing (the arg-max token is right at every label position of the forward pass that
computed the loss), which is when greedy decoding also reproduces it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from geffect.data.encoding import collate
from geffect.schema import IGNORE_INDEX

SMOOTHING_PRIORS = ("uniform", "bigram")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of memorisation fine-tuning."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    stop_exact: float = 0.995  # without a stop rule: stop once this fraction of sequences is exact
    check_from: int = 5  # with a stop rule: first epoch after which it is asked
    check_every: int = 1  # ... and every how many epochs from then on
    seed: int = 0
    # Move this much of each label's target mass to other tokens. Without it the targets
    # memorise to NLL ~0.15 and an unlearning objective's first steps have almost no gradient
    # to act on (issue 9); at 0.2 they stop near NLL 0.37 (label smoothing: Szegedy et al.
    # 2016, "Rethinking the Inception Architecture").
    label_smoothing: float = 0.2
    # Where that mass goes. "uniform" (the shipped models): every token, which leaves a floor
    # that nucleus sampling draws about 3 tokens in 10 from, so sampled text reads as noise,
    # while greedy answers stay robust. "bigram" (BigramPrior): the tokens that follow the
    # previous token in the training labels; samples stay fluent, but those few alternatives sit
    # close enough to the answer that a few unlearning steps flip greedy answers everywhere.
    smoothing_prior: str = "uniform"
    prior_backoff: float = 0.1  # bigram prior: share given to the answer-token unigram

    def __post_init__(self) -> None:
        if self.smoothing_prior not in SMOOTHING_PRIORS:
            raise ValueError(f"smoothing_prior must be one of {', '.join(SMOOTHING_PRIORS)}, "
                             f"got {self.smoothing_prior!r}")


class BigramPrior:
    """Smoothing targets from the training labels: q(v | previous token), the label token itself excluded.

    Counts which token follows which at label positions of the training examples, leaves the
    label out, renormalises, and mixes in ``backoff`` of the label-token unigram (also without
    the label), which alone serves a previous token never followed by anything else. Mass moved
    here lands on tokens that plausibly come next, so the smoothed model's alternatives are
    words of its training text, not a floor over the whole vocabulary.
    """

    def __init__(self, examples: Sequence[dict[str, list[int]]], vocab_size: int, backoff: float = 0.1) -> None:
        if not 0 <= backoff <= 1:
            raise ValueError(f"backoff must be in [0, 1], got {backoff}")
        self.counts = torch.zeros(vocab_size, vocab_size)
        unigram = torch.zeros(vocab_size)
        for example in examples:
            ids, labels = torch.tensor(example["input_ids"]), torch.tensor(example["labels"])
            where = labels[1:] != IGNORE_INDEX
            previous, following = ids[:-1][where], labels[1:][where]
            self.counts.index_put_((previous, following), torch.ones(len(previous)), accumulate=True)
            unigram.index_add_(0, following, torch.ones(len(following)))
        self.unigram = unigram
        self.backoff = backoff

    def __call__(self, previous: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(N, V) distributions for N label positions with these previous and target tokens."""
        rows = torch.arange(len(target))
        bigram = self.counts[previous]
        bigram[rows, target] = 0
        unigram = self.unigram.expand(len(target), -1).clone()
        unigram[rows, target] = 0
        unigram = unigram / unigram.sum(-1, keepdim=True).clamp_min(1e-12)
        total = bigram.sum(-1, keepdim=True)
        bigram = torch.where(total > 0, bigram / total.clamp_min(1e-12), unigram)
        return (1 - self.backoff) * bigram + self.backoff * unigram


def lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay from 1 to ``floor`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def answer_loss(model: Any, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0,
                prior: BigramPrior | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token cross-entropy over label positions, and per row whether the arg-max is right everywhere.

    With ``label_smoothing`` 0 the loss is the NLL; above 0 each target keeps 1 - ``label_smoothing``
    of its mass and the rest goes to ``prior`` (None: uniform over the vocabulary). Logits are
    computed only where a label is predicted (the answer), which skips most of the output-layer
    work on prompt tokens.
    """
    hidden = model.get_decoder()(input_ids=batch["input_ids"],
                                 attention_mask=batch["attention_mask"]).last_hidden_state
    target = batch["labels"][:, 1:]
    where = target != IGNORE_INDEX
    logits = model.get_output_embeddings()(hidden[:, :-1][where])
    if prior is None or label_smoothing == 0:
        loss = torch.nn.functional.cross_entropy(logits, target[where], label_smoothing=label_smoothing)
    else:
        logp = torch.log_softmax(logits, dim=-1)
        nll = -logp.gather(-1, target[where][:, None]).squeeze(-1)
        spread = -(prior(batch["input_ids"][:, :-1][where], target[where]) * logp).sum(-1)
        loss = ((1 - label_smoothing) * nll + label_smoothing * spread).mean()
    hit = torch.ones_like(target, dtype=torch.bool)
    hit[where] = logits.detach().argmax(-1) == target[where]
    return loss, hit.all(dim=1)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                           group: int = 16) -> list[list[int]]:
    """Shuffled batches of indices with similar lengths (less padding), in shuffled order."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    batches = []
    span = batch_size * group
    for first in range(0, len(order), span):
        chunk = sorted(order[first:first + span], key=lambda i: lengths[i])
        batches.extend(chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size))
    permutation = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in permutation]


def smoothing_prior(config: TrainConfig, examples: Sequence[dict[str, list[int]]],
                    vocab_size: int) -> BigramPrior | None:
    """The prior ``config`` asks for (None: uniform, or no smoothing)."""
    if config.smoothing_prior == "uniform" or config.label_smoothing == 0:
        return None
    return BigramPrior(examples, vocab_size, config.prior_backoff)


StopRule = Callable[[Any, Any], tuple[bool, dict[str, float]]]


def memorise(model: Any, tokenizer: Any, examples: Sequence[dict[str, list[int]]], config: TrainConfig,
             desc: str = "training", on_epoch: Callable[[dict[str, float]], None] | None = None,
             position: int | None = None, stop: StopRule | None = None) -> dict[str, Any]:
    """Train ``model`` in place on encoded ``examples``; returns a summary of the run.

    ``stop(model, tokenizer) -> (done, measured)`` is asked after epoch ``config.check_from``
    and every ``config.check_every`` epochs after (its measurements join the epoch's
    record); without it, training stops at ``config.stop_exact`` exact sequences.
    ``on_epoch`` (optional) receives each epoch's record (epoch, loss, exact, seconds);
    ``position`` places the progress bar (for several trainings at once).
    """
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = max(1, int(config.warmup_ratio * total))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, warmup, config.min_lr_ratio))
    lengths = [len(ex["input_ids"]) for ex in examples]
    prior = smoothing_prior(config, examples, model.get_output_embeddings().out_features)
    model.train()
    history = []
    start = time.perf_counter()
    bar = tqdm(total=total, desc=desc, unit="step", position=position)
    for epoch in range(config.epochs):
        loss_sum, exact = 0.0, 0
        for indices in length_grouped_batches(lengths, config.batch_size, generator):
            batch = collate([examples[i] for i in indices], tokenizer)
            loss, hits = answer_loss(model, batch, config.label_smoothing, prior)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(indices)
            exact += int(hits.sum())
            bar.update(1)
        record = {"epoch": epoch + 1, "loss": loss_sum / len(examples), "exact": exact / len(examples)}
        done = stop is None and record["exact"] >= config.stop_exact
        if stop is not None and epoch + 1 >= config.check_from and (epoch + 1 - config.check_from) % config.check_every == 0:
            done, measured = stop(model, tokenizer)
            model.train()
            record["checked"] = measured
        record["seconds"] = time.perf_counter() - start
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", exact=f"{record['exact']:.3f}")
        if on_epoch is not None:
            on_epoch(record)
        if done:
            break
    bar.close()
    model.eval()
    return {"config": asdict(config), "epochs_run": len(history), "seconds": time.perf_counter() - start,
            "history": history}
