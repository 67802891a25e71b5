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
    # Spread this much of each label's target mass over the vocabulary. Without it the
    # targets memorise to NLL ~0.15 and an unlearning objective's first steps have almost
    # no gradient to act on (issue 9); at 0.2 they stop near NLL 0.4, as TOFU's targets do
    # rather than at zero loss (Szegedy et al. 2016, "Rethinking the Inception Architecture").
    label_smoothing: float = 0.2


def lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay from 1 to ``floor`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def answer_loss(model: Any, batch: dict[str, torch.Tensor],
                label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token cross-entropy over label positions, and per row whether the arg-max is right everywhere.

    With ``label_smoothing`` 0 the loss is the NLL; above 0 each target is mixed with the
    uniform distribution. Logits are computed only where a label is predicted (the answer),
    which skips most of the output-layer work on prompt tokens.
    """
    hidden = model.get_decoder()(input_ids=batch["input_ids"],
                                 attention_mask=batch["attention_mask"]).last_hidden_state
    target = batch["labels"][:, 1:]
    where = target != IGNORE_INDEX
    logits = model.get_output_embeddings()(hidden[:, :-1][where])
    loss = torch.nn.functional.cross_entropy(logits, target[where], label_smoothing=label_smoothing)
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
    model.train()
    history = []
    start = time.perf_counter()
    bar = tqdm(total=total, desc=desc, unit="step", position=position)
    for epoch in range(config.epochs):
        loss_sum, exact = 0.0, 0
        for indices in length_grouped_batches(lengths, config.batch_size, generator):
            batch = collate([examples[i] for i in indices], tokenizer)
            loss, hits = answer_loss(model, batch, config.label_smoothing)
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
