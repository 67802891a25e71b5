"""``GEffectCallback``: the trainer's live G-effect recording inside any Hugging Face ``Trainer``.

Users of existing unlearning trainers (built on ``transformers.Trainer``) add
``GEffectCallback(probes, out=...)`` to ``callbacks=[...]`` and get the same records as
``geffect.unlearn``: ``effects`` (directions ``gradient`` and ``update``), ``risks`` and a
``history`` of per-probe risks and the learning rate. The callback uses two events of the
training loop (transformers 5): ``on_pre_optimizer_step`` (gradients accumulated, and
clipped if ``max_grad_norm > 0``; parameters still θ_s) keeps the gradient and snapshots θ_s;
``on_optimizer_step`` (right after ``optimizer.step()``) measures the gradient direction and
the applied update at θ_s in one pass (see :mod:`geffect.training.recording`). Note the gradient seen there
is the one the optimiser uses: set ``max_grad_norm=0`` for the unclipped objective gradient.
Gradients must live in ``.grad`` (plain, DDP or LoRA training; not DeepSpeed ZeRO / FSDP).
From ``on_train_begin`` to ``on_train_end`` the objects alive at the start are kept out of garbage
collections (:func:`geffect.training.heap.steady_heap`), as in ``geffect.unlearn``'s step loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import TrainerCallback

from geffect.data.loader import load_rows
from geffect.training.data import Encoder, ProbeSet
from geffect.training.heap import steady_heap
from geffect.training.recording import StepRecord, StepRecorder
from geffect.training.records import RecordWriter, read_table

ProbeSource = Mapping[str, Any] | Sequence[Mapping[str, Any]] | str | Path | ProbeSet


class GEffectCallback(TrainerCallback):
    """Record probe G-effects every ``record_every`` optimiser steps of a HF ``Trainer``.

    ``probes``: name -> a batch (``input_ids``/``attention_mask``/``labels`` tensors; instances
    numbered 0..B-1), rows of any kind — question/answer, prompt/response or text — (a list, a
    ``datasets.Dataset`` or a data file; checked by ``geffect.data.load_rows``, encoded with the
    trainer's tokenizer or ``tokenizer``; instance = row number) or a ``ProbeSet``.
    ``out``: a directory for the parquet part tables (written at the end of training and every
    ``flush_every`` steps); the tables are also available as ``.effects``, ``.risks``, ``.history``.
    """

    def __init__(self, probes: Mapping[str, ProbeSource], out: str | Path | None = None, record_every: int = 1,
                 directions: Sequence[str] = ("gradient", "update"), granularity: str = "layer",
                 chunk_size: int | None = None, tokenizer: Any = None, flush_every: int = 10) -> None:
        if record_every < 1:
            raise ValueError(f"record_every must be >= 1, got {record_every}")
        self.sources = dict(probes)
        self.out = Path(out) if out is not None else None
        self.record_every, self.directions = record_every, list(directions)
        self.granularity, self.chunk_size = granularity, chunk_size
        self.tokenizer, self.flush_every = tokenizer, flush_every
        self.recorder: StepRecorder | None = None
        self._frames: dict[str, list[pd.DataFrame]] = {"effects": [], "risks": [], "history": []}
        self._writer = RecordWriter(self.out) if self.out is not None else None
        self._pending: tuple[StepRecord, dict[str, Any]] | None = None
        self._current: tuple[StepRecord, dict[str, Any]] | None = None
        self._heap = contextlib.ExitStack()  # holds steady_heap() from on_train_begin to on_train_end

    # -- tables ---------------------------------------------------------------------------------

    def _table(self, name: str) -> pd.DataFrame:
        if self.out is not None:
            return read_table(self.out, name)
        frames = self._frames[name]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    @property
    def effects(self) -> pd.DataFrame:
        return self._table("effects")

    @property
    def risks(self) -> pd.DataFrame:
        return self._table("risks")

    @property
    def history(self) -> pd.DataFrame:
        return self._table("history")

    # -- probes ---------------------------------------------------------------------------------

    def _probe(self, name: str, source: ProbeSource, tokenizer: Any) -> ProbeSet:
        if isinstance(source, ProbeSet):
            return source
        if isinstance(source, Mapping) and "input_ids" in source:
            size = source["input_ids"].shape[0]
            return ProbeSet(name, name, list(range(size)), [{}] * size, dict(source))
        if tokenizer is None:
            raise ValueError(f"probe {name!r} is given as rows: pass tokenizer= to GEffectCallback "
                             "or give the Trainer a processing_class")
        rows = list(load_rows(source, label=f"probe {name!r}"))
        batch = Encoder(tokenizer).batch(rows)
        return ProbeSet(name, name, list(range(len(rows))), rows, batch)

    # -- events ---------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        tokenizer = self.tokenizer or processing_class
        probes = [self._probe(name, source, tokenizer) for name, source in self.sources.items()]
        device = next(model.parameters()).device
        autocast = None
        if getattr(args, "bf16", False):
            autocast = lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)  # noqa: E731
        self.recorder = StepRecorder(model, probes, self.directions, self.granularity, self.chunk_size,
                                     autocast=autocast or contextlib.nullcontext)
        # entered last, once nothing here can fail; transformers has no hook for a training that raises,
        # so a freeze left by one is lifted here before the next training freezes again
        self._heap.close()
        self._heap.enter_context(steady_heap())

    def on_pre_optimizer_step(self, args, state, control, lr_scheduler=None, **kwargs):
        step = state.global_step
        if self.recorder is None or step % self.record_every:
            return
        record = self.recorder.before_step(step)
        row: dict[str, Any] = {"step": step}
        if lr_scheduler is not None:
            row["lr"] = float(lr_scheduler.get_last_lr()[0])
        self._current = (record, row)

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self._current is None:
            return
        record, row = self._current
        self._current = None
        self.recorder.after_step()
        self._complete_pending(record.risk)
        nxt = state.global_step + 1
        if nxt % self.record_every == 0 and (not state.max_steps or nxt < state.max_steps):
            self._pending = (record, row)
        else:
            record.risk_after = self.recorder.risks()
            self._add(record, row)
        if self._writer is not None and nxt % self.flush_every == 0:
            self._writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        self._complete_pending(None)
        if self._writer is not None:
            self._writer.flush()
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        self._heap.close()

    # -- bookkeeping ----------------------------------------------------------------------------

    def _complete_pending(self, risk_after) -> None:
        if self._pending is None:
            return
        record, row = self._pending
        self._pending = None
        record.risk_after = risk_after if risk_after is not None else self.recorder.risks()
        self._add(record, row)

    def _add(self, record: StepRecord, row: dict[str, Any]) -> None:
        row = {**row, **record.history_fields()}
        frames = {"effects": record.effects_frame(), "risks": record.risks_frame(), "history": pd.DataFrame([row])}
        for name, frame in frames.items():
            if self._writer is not None:
                self._writer.add(name, frame)
            else:
                self._frames[name].append(frame)
