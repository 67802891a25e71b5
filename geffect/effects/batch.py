"""Probe batches for the engine: label targets, per-instance risk weights, padding-safe layout.

Risk of instance ``i`` (Wang et al., ICLR 2025, use per-example NLL risk):

- ``reduction="instance"``: ``R_i = (1/n_i) Σ_τ ℓ_{i,τ}``, the mean token negative log-likelihood
  over its ``n_i`` label tokens (after the causal shift: logits at position ``t`` predict the
  label at ``t+1``);
- ``reduction="token"``: the paper code's batch-level token mean ``Σ_{all τ} ℓ / N`` split into
  per-instance shares ``R_i = (B/N) Σ_τ ℓ_{i,τ}`` (``N`` label tokens in the whole batch of ``B``
  instances), so that, as for ``"instance"``, the batch value is the *mean* over instances.

Padding contributes nothing: a label counts only when both its own position and the position
predicting it are real tokens (``attention_mask == 1``). Fully masked query rows (left padding)
make some Hugging Face eager attentions produce NaN in float64 (the mask minimum overflows to
-inf in a float32 softmax), which then leaks into real rows through ``0 * NaN`` in the next
layer. So rows are re-laid out with their real tokens first (a stable partition, which keeps
their order) and explicit ``position_ids`` equal to the original ones: every real token sees
exactly the same tokens at the same positions as in the original call, and no row is fully
masked. Batches without interior/left padding keep their layout. Position ids are always passed
explicitly, one row per instance (same values as the model's default ``arange``).

Only the logits that predict a label are needed, so the engine asks the model for those
positions alone through Hugging Face's ``logits_to_keep``: as a boolean mask (``label_mask``,
B × T) where the model slices with ``slice_logits_to_keep`` (transformers ≥ 5), which returns
the label rows flattened, exactly one per target; otherwise as one row of positions per instance
(``keep``, padded by repeating a row's last one). The head, the softmax and their contractions
then cost in proportion to the label tokens rather than to the padded length. A model that
ignores the argument returns all positions, which is recognised by the shape and handled the
same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from geffect.schema import IGNORE_INDEX

REDUCTIONS = ("instance", "token")


@dataclass
class ProbeBatch:
    """Model inputs plus the flat list of label targets of a probe batch.

    ``rows``/``cols`` index the logits (in the possibly re-laid-out batch) that predict
    ``target_ids``; ``positions`` are the labels' positions in the caller's layout and
    ``weights`` the factors turning token NLLs into per-instance risks. ``keep`` (B × K) lists
    each row's predicting positions (``None`` when that would not be shorter than the batch) and
    ``slots`` each target's index in its row of ``keep``; ``label_mask`` (B × T, bool) marks the
    same positions, in row-major order the targets' order (``None`` when it would keep every
    position).
    """

    inputs: dict[str, torch.Tensor]
    rows: torch.Tensor
    cols: torch.Tensor
    target_ids: torch.Tensor
    positions: torch.Tensor
    weights: torch.Tensor
    size: int
    keep: torch.Tensor | None = None
    slots: torch.Tensor | None = None
    label_mask: torch.Tensor | None = None

    def to(self, device: torch.device) -> ProbeBatch:
        moved = {k: v.to(device) for k, v in self.inputs.items()}
        keep = None if self.keep is None else self.keep.to(device)
        slots = None if self.slots is None else self.slots.to(device)
        label_mask = None if self.label_mask is None else self.label_mask.to(device)
        return replace(self, inputs=moved, rows=self.rows.to(device), cols=self.cols.to(device),
                       target_ids=self.target_ids.to(device), positions=self.positions.to(device),
                       weights=self.weights.to(device), keep=keep, slots=slots, label_mask=label_mask)

    def chunks(self, chunk_size: int | None) -> Iterator[tuple[int, ProbeBatch]]:
        """Consecutive row chunks ``(first_row, sub_batch)``; risk weights stay those of the whole batch."""
        if chunk_size is None or chunk_size >= self.size:
            yield 0, self
            return
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        for start in range(0, self.size, chunk_size):
            stop = min(start + chunk_size, self.size)
            keep = (self.rows >= start) & (self.rows < stop)
            inputs = {k: v[start:stop] for k, v in self.inputs.items()}
            yield start, ProbeBatch(inputs=inputs, rows=self.rows[keep] - start, cols=self.cols[keep],
                                    target_ids=self.target_ids[keep], positions=self.positions[keep],
                                    weights=self.weights[keep], size=stop - start,
                                    keep=None if self.keep is None else self.keep[start:stop],
                                    slots=None if self.slots is None else self.slots[keep],
                                    label_mask=None if self.label_mask is None else self.label_mask[start:stop])


def _tensor(batch: Mapping, key: str) -> torch.Tensor:
    value = batch[key]
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    if value.dim() != 2:
        raise ValueError(f"batch[{key!r}] must have shape (batch, length), got {tuple(value.shape)}")
    return value


def check_token_ids(ids: torch.Tensor, vocab_size: int, what: str) -> None:
    """Raise naming the first token id outside ``[0, vocab_size)`` (an index error deep in the model otherwise)."""
    bad = (ids < 0) | (ids >= vocab_size)
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{what} holds token id {int(ids[where])} at {where}, outside the model's vocabulary "
                         f"of {vocab_size} ids (is the batch encoded with this model's tokenizer?)")


def vocabulary_size(model: torch.nn.Module) -> int | None:
    """Rows of the model's input embedding, or None when it does not say."""
    try:
        return int(model.get_input_embeddings().num_embeddings)
    except (AttributeError, NotImplementedError, TypeError):
        return None


def prepare_batch(batch: Mapping, reduction: str = "instance", vocab_size: int | None = None) -> ProbeBatch:
    """Validate a probe batch and compute its targets and risk weights (see the module docstring).

    ``vocab_size`` (the model's, see :func:`vocabulary_size`): token ids are checked against it.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    for key in ("input_ids", "labels"):
        if key not in batch:
            raise ValueError(f"probe batch is missing {key!r} (it has keys {sorted(batch)})")
    input_ids = _tensor(batch, "input_ids").long()
    labels = _tensor(batch, "labels").long()
    mask = (_tensor(batch, "attention_mask") if batch.get("attention_mask") is not None
            else torch.ones_like(input_ids)).bool()
    if labels.shape != input_ids.shape or mask.shape != input_ids.shape:
        raise ValueError(f"batch shapes differ: input_ids {tuple(input_ids.shape)}, labels "
                         f"{tuple(labels.shape)}, attention_mask {tuple(mask.shape)}")
    size, length = input_ids.shape
    if size == 0 or length == 0:
        raise ValueError(f"the probe batch has no rows (input_ids of shape {tuple(input_ids.shape)})")
    if vocab_size is not None:
        check_token_ids(input_ids, vocab_size, "input_ids")
        check_token_ids(labels.masked_fill(labels == IGNORE_INDEX, 0), vocab_size, "labels")
    labels = labels.to(input_ids.device)
    mask = mask.to(input_ids.device)
    if batch.get("position_ids") is not None:
        positions = _tensor(batch, "position_ids").long().expand(size, length)
    else:
        positions = torch.arange(length, device=input_ids.device).expand(size, length)

    # Target pairs (t -> t+1) in the caller's layout.
    valid = (labels[:, 1:] != IGNORE_INDEX) & mask[:, 1:] & mask[:, :-1]
    counts = valid.sum(1)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"probe instance(s) at batch index {empty} have no label token (all labels "
                         f"are {IGNORE_INDEX} or padded); their risk is undefined")
    rows, cols = valid.nonzero(as_tuple=True)
    target_ids = labels[rows, cols + 1]
    if reduction == "instance":
        weights = 1.0 / counts[rows].double()
    else:
        weights = torch.full(rows.shape, size / rows.numel(), dtype=torch.float64, device=rows.device)

    # Explicit per-row position ids: the function is unchanged, and position embeddings get a
    # batch dimension (GPT-2's ``wpe`` otherwise sees one broadcast row for the whole batch).
    inputs = {"input_ids": input_ids, "attention_mask": mask.long(), "position_ids": positions.contiguous()}
    cols_new = cols
    if bool(((~mask[:, :-1]) & mask[:, 1:]).any()):  # left or interior padding: real tokens first
        order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
        where = torch.argsort(order, dim=1)  # original position -> new position
        inputs = {key: value.gather(1, order) for key, value in inputs.items()}
        cols_new = where[rows, cols]
    keep, slots = _kept_positions(rows, cols_new, counts, size, length)
    label_mask = None
    if rows.numel() < size * length:
        label_mask = torch.zeros(size, length, dtype=torch.bool, device=rows.device)
        label_mask[rows, cols_new] = True
    return ProbeBatch(inputs=inputs, rows=rows, cols=cols_new, target_ids=target_ids,
                      positions=cols + 1, weights=weights, size=size, keep=keep, slots=slots,
                      label_mask=label_mask)


def _kept_positions(rows: torch.Tensor, cols: torch.Tensor, counts: torch.Tensor, size: int,
                    length: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per row, the positions whose logits predict a label (``rows`` sorted), padded by repetition."""
    width = int(counts.max())
    if width >= length:
        return None, None
    starts = torch.cumsum(counts, 0) - counts
    slots = torch.arange(rows.numel(), device=rows.device) - starts[rows]
    last = cols[starts + counts - 1]
    keep = last.unsqueeze(1).expand(size, width).clone()
    keep[rows, slots] = cols
    return keep, slots


def target_nll(logits: torch.Tensor, probe: ProbeBatch) -> torch.Tensor:
    """Token NLLs of the probe's targets, in the probe's target order.

    ``logits``: the label rows flattened (N × V, one per target, from ``label_mask``), or B × T × V
    (all positions, or those of ``keep``). Computed like Hugging Face's own loss (one
    cross-entropy, float32 at least, other positions ignored) so it costs the same memory;
    ignored positions get an exactly zero gradient.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if logits.dim() == 2:
        return F.cross_entropy(logits, probe.target_ids, reduction="none")
    size, length, vocab = logits.shape
    kept = probe.keep is not None and length == probe.keep.shape[1]
    cols = probe.slots if kept else probe.cols
    targets = torch.full((size, length), IGNORE_INDEX, dtype=torch.long, device=logits.device)
    targets[probe.rows, cols] = probe.target_ids
    nll = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), ignore_index=IGNORE_INDEX,
                          reduction="none")
    return nll[probe.rows * length + cols]


def instance_risks(nll: torch.Tensor, probe: ProbeBatch) -> torch.Tensor:
    """Per-instance risks (float64) from target NLLs."""
    risks = torch.zeros(probe.size, dtype=torch.float64, device=nll.device)
    return risks.index_add_(0, probe.rows, nll.detach().double() * probe.weights)
