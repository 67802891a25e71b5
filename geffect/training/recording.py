"""Live G-effect recording around one optimiser step, shared by the trainer, the DDP path and the
Hugging Face callback.

At a recorded step ``s`` with parameters θ_s and accumulated objective gradient g_s:

* :meth:`StepRecorder.before_step` (after ``backward``, before clipping and ``optimizer.step``)
  keeps the objective gradient g_s (a reference to ``.grad``, or a copy if the caller changes
  ``.grad`` in place before stepping, e.g. by clipping) and snapshots the trainable parameters.
* :meth:`StepRecorder.after_step` (after ``optimizer.step``) forms the applied update
  Δθ = θ_{s+1} − θ_s, swaps the parameters back to θ_s (a pointer swap, no copy, so θ_{s+1} is
  restored bit for bit) and measures, with one reusable :class:`geffect.effects.EffectProbe`
  and in one forward/backward pass (``measure_many``), for each probe instance i and layer
  group k both the G-effect ``e[i,k] = <∇_k R_i(θ_s), g_s,k>`` (Wang et al., ICLR 2025,
  direction ``"gradient"``) and ``<∇_k R_i(θ_s), Δθ_k>`` (direction ``"update"``); the same
  forward gives R_i(θ_s). Then it swaps back. The gradient is taken at θ_s on purpose: then
  Σ_k of the update effect is the first-order Taylor prediction of R_i(θ_{s+1}) − R_i(θ_s),
  the ``predicted_change`` that ``risks.parquet`` puts beside the observed change. (Recording
  only the gradient direction measures in ``before_step`` and needs no snapshot.)
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
from torch.distributed.tensor import DTensor

from geffect.effects.direction import resolve_direction
from geffect.effects.runtime import precision, probe_risks
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
        """Long rows: step, probe, instance, layer, direction, value (built in one go: this runs every step)."""
        if not self.values:
            return pd.DataFrame()
        parts = list(self.values.items())
        sizes = [values.numel() for _, values in parts]
        k = len(self.groups)
        return pd.DataFrame({
            "step": np.full(sum(sizes), self.step, dtype=np.int64),
            "probe": np.repeat([probe for (probe, _), _ in parts], sizes),
            "instance": np.concatenate([np.repeat(np.asarray(self.indices[probe], dtype=np.int64), k)
                                        for (probe, _), _ in parts]),
            "layer": np.concatenate([np.tile(np.asarray(self.groups, dtype=object), v.shape[0]) for _, v in parts]),
            "direction": np.repeat([direction for (_, direction), _ in parts], sizes),
            "value": np.concatenate([values.reshape(-1).numpy() for _, values in parts]),
        })

    def risks_frame(self) -> pd.DataFrame:
        """Per instance: risk before, risk after, and Σ_layers of the update effect."""
        if self.risk_after is None:
            raise RuntimeError(f"the records of step {self.step} are still waiting for the risks after the step")
        probes = list(self.risk)
        sizes = [self.risk[p].numel() for p in probes]
        predicted = [self.values[(p, DIRECTION_UPDATE)].sum(1).numpy() if (p, DIRECTION_UPDATE) in self.values
                     else np.full(size, np.nan) for p, size in zip(probes, sizes)]
        return pd.DataFrame({
            "step": np.full(sum(sizes), self.step, dtype=np.int64),
            "probe": np.repeat(probes, sizes),
            "instance": np.concatenate([np.asarray(self.indices[p], dtype=np.int64) for p in probes]),
            "risk": np.concatenate([self.risk[p].numpy() for p in probes]),
            "risk_after": np.concatenate([self.risk_after[p].numpy() for p in probes]),
            "predicted_change": np.concatenate(predicted),
        })

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
                 probe_factory: Callable[..., object] | None = None, dtype: torch.dtype | None = None) -> None:
        if probe_factory is None:
            from geffect.effects import EffectProbe as probe_factory
        self.model = model
        self.dtype = dtype
        self.probes = list(probes)
        self.directions = list(directions)
        self.chunk_size = chunk_size
        self.gather = gather
        self.autocast = autocast or contextlib.nullcontext
        self.engine = probe_factory(model, granularity=granularity, **({"dtype": dtype} if dtype else {}))
        self.groups = list(self.engine.groups)
        self.indices = {p.name: self.gather(torch.tensor(p.indices, dtype=torch.long)).tolist() for p in self.probes}
        # All probes go through the engine as one batch (one forward/backward per direction, not
        # one per probe): fewer, larger passes; the right padding added contributes exactly zero.
        batch, self._slices = combine_batches([p.batch for p in self.probes])
        self._batch = to_device(batch, self.device) if batch else {}
        self._snapshot: dict[str, torch.Tensor] | None = None
        self._grads: dict[str, torch.Tensor] | None = None
        self._params: dict[str, torch.nn.Parameter] | None = None
        self._record: StepRecord | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _trainable(self) -> dict[str, torch.nn.Parameter]:
        if self._params is None:  # the Parameter objects stay; only their data moves
            self._params = {name: p for name, p in self.model.named_parameters() if p.requires_grad}
        return self._params

    @contextlib.contextmanager
    def _eval_mode(self):
        """Measure in eval mode (no dropout, no gradient checkpointing recomputation)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with self.autocast(), precision(self.model, self.dtype):
                yield
        finally:
            self.model.train(was_training)

    def _measure(self, directions: dict, record: StepRecord) -> None:
        """Measure the named directions in one pass and file them (and R_i(θ)) under each probe."""
        width = len(self.groups)
        values = {name: torch.zeros(0, width, dtype=torch.float64) for name in directions}
        risks = torch.zeros(0, dtype=torch.float64)
        if self._batch:
            with self._eval_mode():
                results = self.engine.measure_many(directions, self._batch, chunk_size=self.chunk_size)
            values = {name: result.values.to(torch.float64).cpu() for name, result in results.items()}
            risks = next(iter(results.values())).risks.to(torch.float64).cpu()
            # the engine may merge modules into their parents on its first pass (module granularity)
            self.groups = record.groups = list(next(iter(results.values())).groups)
        for name in directions:  # rows direction by direction, probe by probe
            for probe, part in zip(self.probes, self._slices):
                record.values[(probe.name, name)] = self.gather(values[name][part])
        for probe, part in zip(self.probes, self._slices):
            record.risk[probe.name] = self.gather(risks[part])

    def before_step(self, step: int, copy_grads: bool = False) -> StepRecord:
        """Start recording step ``step`` at θ_s (``.grad`` must hold the objective gradient).

        ``copy_grads``: keep a copy of the gradient, for callers that change ``.grad`` in place
        before ``optimizer.step`` (gradient clipping); otherwise a reference is kept.
        """
        record = StepRecord(step, self.groups, self.indices)
        self._grads = None
        if DIRECTION_GRADIENT in self.directions:
            if DIRECTION_UPDATE not in self.directions:
                self._measure({DIRECTION_GRADIENT: "grad"}, record)  # nothing to wait for
            else:
                grads = resolve_direction(self.model, "grad")
                self._grads = {name: g.clone() for name, g in grads.items()} if copy_grads else grads
        if DIRECTION_UPDATE in self.directions:
            self._snapshot = {name: p.detach().clone() for name, p in self._trainable().items()}
        self._record = record
        return record

    def after_step(self) -> StepRecord:
        """Measure at θ_s what waits for the applied update (call right after ``optimizer.step``)."""
        record, self._record = self._record, None
        if record is None:
            raise RuntimeError("StepRecorder.after_step called without a matching before_step")
        if DIRECTION_UPDATE in self.directions:
            params, before = self._trainable(), self._snapshot
            self._snapshot = None
            delta = {name: (p.detach() - before[name]) for name, p in params.items()}
            directions = {DIRECTION_UPDATE: delta}
            if self._grads is not None:
                directions = {DIRECTION_GRADIENT: self._grads, **directions}
                self._grads = None
            self._swap(params, before)  # parameters now hold θ_s
            try:
                self._measure(directions, record)
            finally:
                self._swap(params, before)  # back to θ_{s+1}, bit for bit
        return record

    @staticmethod
    def _swap(params: dict[str, torch.nn.Parameter], other: dict[str, torch.Tensor]) -> None:
        """Exchange the parameters' values with ``other`` (bit for bit): by pointer, or by copy for
        FSDP2 shards, whose storage FSDP gathers from and must keep."""
        with torch.no_grad():
            for name, param in params.items():
                if isinstance(param, DTensor):
                    held = param.detach().clone()
                    param.copy_(other[name])
                    other[name] = held
                else:
                    param.data, other[name] = other[name], param.data

    @torch.no_grad()
    def risks(self) -> dict[str, torch.Tensor]:
        """R_i at the current parameters for every probe instance (no-grad forward passes)."""
        out = {}
        with self._eval_mode():
            risks = torch.zeros(0, dtype=torch.float64)
            if self._batch:
                risks = probe_risks(self.model, self._batch, self.chunk_size)
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
    """R_i: mean NLL over each instance's label tokens (HF causal shift), float64 on CPU, as the
    G-effect engine defines it (logits computed only at label positions)."""
    return probe_risks(model, batch)
