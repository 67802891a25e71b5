"""Live G-effect recording around one optimiser step, shared by the trainer, the DDP path and the
Hugging Face callback.

At a recorded step ``s`` with parameters θ_s and accumulated objective gradient g_s:

* :meth:`StepRecorder.before_step` (after ``backward``, before clipping and ``optimizer.step``)
  measures, for each probe instance i and layer group k, the G-effect
  ``e[i,k] = <∇_k R_i(θ_s), g_s,k>`` (Wang et al., ICLR 2025, direction ``"gradient"``) with one
  reusable :class:`geffect.effects.EffectProbe`; the same forward gives R_i(θ_s). It also
  snapshots the trainable parameters.
* :meth:`StepRecorder.after_step` (after ``optimizer.step``) forms the applied update
  Δθ = θ_{s+1} − θ_s, swaps the parameters back to θ_s (a pointer swap, no copy, so θ_{s+1} is
  restored bit for bit), measures ``<∇_k R_i(θ_s), Δθ_k>`` (direction ``"update"``), and swaps
  back. The gradient is taken at θ_s on purpose: then Σ_k of the update effect is the
  first-order Taylor prediction of R_i(θ_{s+1}) − R_i(θ_s), the ``predicted_change`` that
  ``risks.parquet`` puts beside the observed change.
* R_i(θ_{s+1}), for the observed change, comes free from the next step's measurement when the
  next step is recorded too; otherwise :meth:`StepRecorder.risks` runs one no-grad forward at
  θ_{s+1}. Until then the step's records are *pending* (:class:`StepRecord`).

The recorder never touches ``.grad``, the optimiser or the RNG streams of training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from geffect.schema import DIRECTION_GRADIENT, DIRECTION_UPDATE, IGNORE_INDEX
from geffect.training.data import ProbeSet, to_device

Gather = Callable[[torch.Tensor], torch.Tensor]


def _no_gather(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@dataclass
class StepRecord:
    """Everything recorded at one step; ``risk_after`` is filled when θ_{s+1} is evaluated."""

    step: int
    groups: list[str]
    indices: dict[str, list[int]]  # probe -> instance ids
    values: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)  # (probe, direction) -> B×K
    risk: dict[str, torch.Tensor] = field(default_factory=dict)  # probe -> R_i(θ_s)
    risk_after: dict[str, torch.Tensor] | None = None  # probe -> R_i(θ_{s+1})

    @property
    def complete(self) -> bool:
        return self.risk_after is not None

    def effects_frame(self) -> pd.DataFrame:
        """Long rows: step, probe, instance, layer, direction, value."""
        frames = []
        for (probe, direction), values in self.values.items():
            n, k = values.shape
            frames.append(pd.DataFrame({
                "step": self.step,
                "probe": probe,
                "instance": np.repeat(np.asarray(self.indices[probe], dtype=np.int64), k),
                "layer": np.tile(np.asarray(self.groups, dtype=object), n),
                "direction": direction,
                "value": values.reshape(-1).numpy(),
            }))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def risks_frame(self) -> pd.DataFrame:
        """Per instance: risk before, risk after, and Σ_layers of the update effect."""
        if self.risk_after is None:
            raise RuntimeError(f"the records of step {self.step} are still waiting for the risks after the step")
        frames = []
        for probe, risk in self.risk.items():
            update = self.values.get((probe, DIRECTION_UPDATE))
            frames.append(pd.DataFrame({
                "step": self.step,
                "probe": probe,
                "instance": np.asarray(self.indices[probe], dtype=np.int64),
                "risk": risk.numpy(),
                "risk_after": self.risk_after[probe].numpy(),
                "predicted_change": update.sum(1).numpy() if update is not None else np.nan,
            }))
        return pd.concat(frames, ignore_index=True)

    def history_fields(self) -> dict[str, float]:
        """``risk_<probe>`` (mean before) and ``risk_change_<probe>`` (mean observed change)."""
        fields: dict[str, float] = {}
        for probe, risk in self.risk.items():
            fields[f"risk_{probe}"] = float(risk.mean())
            if self.risk_after is not None:
                fields[f"risk_change_{probe}"] = float((self.risk_after[probe] - risk).mean())
        return fields


class StepRecorder:
    """Measures probe G-effects around optimiser steps of ``model`` (see the module docstring).

    ``probes`` are this process's probe sets; ``gather`` concatenates a per-process tensor
    along dim 0 across processes (identity in a single process). ``autocast`` returns the
    context the model's forward runs under during training (bf16 autocast, or none).
    """

    def __init__(self, model: torch.nn.Module, probes: Sequence[ProbeSet], directions: Sequence[str],
                 granularity: str = "layer", chunk_size: int | None = None,
                 gather: Gather = _no_gather, autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
                 probe_factory: Callable[..., object] | None = None) -> None:
        if probe_factory is None:
            from geffect.effects import EffectProbe as probe_factory
        self.model = model
        self.probes = list(probes)
        self.directions = list(directions)
        self.chunk_size = chunk_size
        self.gather = gather
        self.autocast = autocast or contextlib.nullcontext
        self.engine = probe_factory(model, granularity=granularity)
        self.groups = list(self.engine.groups)
        self.indices = {p.name: self.gather(torch.tensor(p.indices, dtype=torch.long)).tolist() for p in self.probes}
        # All probes go through the engine as one batch (one forward/backward per direction, not
        # one per probe): fewer, larger passes; the right padding added contributes exactly zero.
        batch, self._slices = combine_batches([p.batch for p in self.probes])
        self._batch = to_device(batch, self.device) if batch else {}
        self._snapshot: dict[str, torch.Tensor] | None = None
        self._record: StepRecord | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _trainable(self) -> dict[str, torch.nn.Parameter]:
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    @contextlib.contextmanager
    def _eval_mode(self):
        """Measure in eval mode (no dropout, no gradient checkpointing recomputation)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with self.autocast():
                yield
        finally:
            self.model.train(was_training)

    def _measure(self, direction, record: StepRecord, name: str) -> None:
        values = torch.zeros(0, len(self.groups), dtype=torch.float64)
        risks = torch.zeros(0, dtype=torch.float64)
        if self._batch:
            with self._eval_mode():
                result = self.engine.measure(direction, self._batch, chunk_size=self.chunk_size)
            values, risks = result.values.to(torch.float64).cpu(), result.risks.to(torch.float64).cpu()
        for probe, part in zip(self.probes, self._slices):
            record.values[(probe.name, name)] = self.gather(values[part])
            if probe.name not in record.risk:
                record.risk[probe.name] = self.gather(risks[part])

    def before_step(self, step: int) -> StepRecord:
        """Measure the gradient direction at θ_s (``.grad`` must hold the objective gradient)."""
        record = StepRecord(step, self.groups, self.indices)
        if DIRECTION_GRADIENT in self.directions:
            self._measure("grad", record, DIRECTION_GRADIENT)
        if DIRECTION_UPDATE in self.directions:
            self._snapshot = {name: p.detach().clone() for name, p in self._trainable().items()}
        self._record = record
        return record

    def after_step(self) -> StepRecord:
        """Measure the applied update at θ_s (call right after ``optimizer.step``); returns the record."""
        record, self._record = self._record, None
        if record is None:
            raise RuntimeError("StepRecorder.after_step called without a matching before_step")
        if DIRECTION_UPDATE in self.directions:
            params, before = self._trainable(), self._snapshot
            self._snapshot = None
            delta = {name: (p.detach() - before[name]) for name, p in params.items()}
            self._swap(params, before)  # parameters now hold θ_s
            try:
                self._measure(delta, record, DIRECTION_UPDATE)
            finally:
                self._swap(params, before)  # back to θ_{s+1}, bit for bit
        return record

    @staticmethod
    def _swap(params: dict[str, torch.nn.Parameter], other: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, param in params.items():
                param.data, other[name] = other[name], param.data

    @torch.no_grad()
    def risks(self) -> dict[str, torch.Tensor]:
        """R_i at the current parameters for every probe instance (no-grad forward passes)."""
        out = {}
        with self._eval_mode():
            risks = torch.zeros(0, dtype=torch.float64)
            if self._batch:
                batch = self._batch
                size = batch["input_ids"].shape[0]
                chunk = self.chunk_size or size
                risks = torch.cat([instance_risks(self.model, {k: v[i : i + chunk] for k, v in batch.items()})
                                   for i in range(0, size, chunk)])
            for probe, part in zip(self.probes, self._slices):
                out[probe.name] = self.gather(risks[part])
        return out

    def close(self) -> None:
        self.engine.close()


def combine_batches(batches: Sequence[dict]) -> tuple[dict, list[slice]]:
    """One right-padded batch from several (pad id 0, mask 0, label -100; empty ones skipped),
    and the rows of each input batch in it."""
    sizes = [b["input_ids"].shape[0] if b else 0 for b in batches]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    slices = [slice(start, start + size) for start, size in zip(starts, sizes)]
    present = [b for b, size in zip(batches, sizes) if size]
    if not present:
        return {}, slices
    width = max(b["input_ids"].shape[1] for b in present)
    fill = {"input_ids": 0, "attention_mask": 0, "labels": IGNORE_INDEX}
    combined = {key: torch.cat([torch.nn.functional.pad(b[key], (0, width - b[key].shape[1]), value=value)
                                for b in present]) for key, value in fill.items()}
    return combined, slices


def instance_risks(model: torch.nn.Module, batch) -> torch.Tensor:
    """R_i: mean NLL over each instance's label tokens (HF causal shift), float64 on CPU."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    logits = logits[:, :-1]
    mask = labels != IGNORE_INDEX
    rows, cols = mask.nonzero(as_tuple=True)
    picked = logits[rows, cols].double()
    nll = torch.nn.functional.cross_entropy(picked, labels[rows, cols], reduction="none")
    totals = torch.zeros(labels.shape[0], dtype=torch.float64, device=nll.device).index_add_(0, rows, nll)
    counts = mask.sum(1).to(torch.float64)
    if bool((counts == 0).any()):
        raise ValueError(f"probe instance(s) at batch index {(counts == 0).nonzero().flatten().tolist()} have no label token")
    return (totals / counts).cpu()
