"""``geffect.unlearn``: run an unlearning objective and record its G-effects live.

One optimiser step ``s`` (θ_s → θ_{s+1}):

1. for each of ``grad_accum`` micro-batches: the objective's loss on a forget batch (with the
   views it needs) and, if it uses one, a retain batch; ``backward`` of loss / grad_accum;
   with several processes, one all-reduce averages the gradients (see ``distributed``);
2. a non-finite loss, loss part or gradient stops the run here: records are kept, the run
   is marked ``diverged`` and the message names the step and the part;
3. on recorded steps (every ``record_every``): the G-effect of the objective gradient per
   probe instance and layer group, at θ_s (:class:`~geffect.training.recording.StepRecorder`);
4. optional gradient clipping, ``optimizer.step()``, schedule step;
5. on recorded steps: the effect of the applied update Δθ at θ_s, and R_i(θ_{s+1}) (from the
   next step's measurement, or a forward pass) for the observed change;
6. history row (loss, loss parts incl. objective weights, gradient norm, lr, per-probe mean
   risk and observed change); flush every ``flush_every`` steps; checkpoint every
   ``checkpoint_every`` steps (default: at every flush) and at the end.

The run directory is claimed first (``claim``: one live writer, never a user's folder).
``resume=True`` continues a killed run from its newest checkpoint: the records before it are
verified (a damaged part stops the resume, naming the file), those after it are recomputed,
and every state that decides later steps (parameters, optimiser, schedule, RNGs, data draw
counter) is restored, so the final records equal those of an uninterrupted run.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from geffect.data.lengths import LengthPolicy
from geffect.errors import ObjectiveError
from geffect.training import checkpoint as ckpt
from geffect.training.claim import claim_run_dir
from geffect.training.companions import CompanionContext, build_companion
from geffect.training.config import CONFIG_FILE, ConfigError, UnlearnConfig, anchored
from geffect.training.data import UnlearningData, check_views, run_source, to_device
from geffect.training.distributed import launched_rank, processes
from geffect.training.heap import steady_heap
from geffect.training.modeling import (
    apply_lora,
    autocast_factory,
    default_device,
    enable_checkpointing,
    load_base,
    reference_copy,
    select_trainable,
    trainable_state,
)
from geffect.training.preflight import preflight
from geffect.training.recording import StepRecord, StepRecorder
from geffect.training.records import RecordWriter, verify_records
from geffect.training.run import Run
from geffect.training.rundir import (
    HELDOUT_FILE,
    STATUS_FILE,
    read_json,
    write_json,
    write_probe_texts,
    write_status,
)
from geffect.training.stacking import stack_lora

_SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


# -- objectives -------------------------------------------------------------------------------------


def resolve_objective(objective: str | Callable[..., Any]):
    """(spec, label): the objective's spec and the reference the config stores for it.

    ``objective`` is a registered name, ``"path/to/file.py:function"``, ``"package.module:function"``
    or a function with the objective signature (see ``geffect.objectives.loading``).
    """
    from geffect.objectives import get_objective, list_objectives
    from geffect.objectives import resolve_objective as to_spec
    from geffect.objectives.loading import load_objective, objective_reference

    if isinstance(objective, str) and objective in list_objectives():
        return get_objective(objective), objective
    if isinstance(objective, str):
        objective = load_objective(objective)  # an ObjectiveError names what is missing
    if not callable(objective):
        raise ConfigError(f"objective must be a name or a function, got {type(objective).__name__}")
    try:
        spec = to_spec(objective)
    except (TypeError, ValueError) as err:
        raise ObjectiveError(str(err)) from None
    registered = spec.name in list_objectives() and get_objective(spec.name).fn is spec.fn
    return spec, spec.name if registered else objective_reference(objective)


# -- entry point -------------------------------------------------------------------------------------


def unlearn(objective: str | Callable[..., Any] | None = None, model: str | None = None,
            forget: str | None = None, retain: str | None = None, steps: int | None = None,
            out: str | Path | None = None, *, config: UnlearnConfig | None = None,
            resume: bool = False, progress: bool = True, **settings: Any) -> Run:
    """Unlearn ``forget`` from ``model`` with ``objective``, recording G-effects; returns the :class:`Run`.

    ``objective``: a registered name (``geffect.list_objectives()``), ``"module:function"``, or a
    function ``fn(model, forget, retain=None, ref_model=None, **hparams) -> ObjectiveOutput``.
    Other settings are :class:`UnlearnConfig` fields given as keywords (``lr=``, ``batch_size=``,
    ``hparams={...}``, ``probes={...}`` ...) or a whole ``config``. ``out`` is the run directory
    (default ``runs/<objective>-<forget>-<time>``). ``resume=True`` continues the run in ``out``
    from its last checkpoint (settings given must match the saved ones). A run whose loss turns
    non-finite stops with a warning and ``run.status == "diverged"``.
    """
    given = {k: v for k, v in dict(model=model, forget=forget, retain=retain, steps=steps, **settings).items()
             if v is not None}
    fn = objective if callable(objective) else None
    if objective is not None:
        given["objective"] = resolve_objective(objective)[1]
    run_dir = Path(out) if out is not None else None
    if resume:
        if run_dir is None:
            raise ConfigError("resume=True needs out= (the directory of the run to continue)")
        if (run_dir / CONFIG_FILE).is_file():
            saved = UnlearnConfig.load(run_dir)
            _check_same(saved, config, given, run_dir)
            config = saved
    if config is None:
        if "objective" not in given:
            raise ConfigError("no objective given: pass a registered name, 'module:function' or a function")
        config = UnlearnConfig.from_dict(given)
    elif not resume:
        config = UnlearnConfig.from_dict({**config.to_dict(), **given})
    config = config.resolved()
    if run_dir is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{config.objective.replace(':', '.')}-{Path(config.forget).stem}-{stamp}"
    trainer = Trainer(config, run_dir, objective_fn=fn, progress=progress)
    return trainer.run(resume=resume)


def _check_same(saved: UnlearnConfig, config: UnlearnConfig | None, given: dict[str, Any], run_dir: Path) -> None:
    """Resume must not silently change the run: compare explicit settings with the saved ones."""
    wanted = anchored(given)  # a relative file given again names the same absolute file the config saved
    if config is not None:
        wanted = {**config.resolved().to_dict(), **wanted}
    saved_values = saved.to_dict()
    changed = [f"{k}: saved {saved_values[k]!r}, given {v!r}" for k, v in wanted.items()
               if k in saved_values and saved_values[k] != v]
    if changed:
        raise ConfigError(f"cannot resume {str(run_dir)!r} with different settings ({'; '.join(changed)}); "
                          "start a new run in another directory instead")


# -- the trainer -------------------------------------------------------------------------------------


class Trainer:
    """Builds everything a run needs from its config and runs the step loop (see the module docstring)."""

    def __init__(self, config: UnlearnConfig, run_dir: str | Path, objective_fn: Callable | None = None,
                 progress: bool = True, probe_factory: Callable | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.spec, label = resolve_objective(objective_fn if objective_fn is not None else config.objective)
        if label != config.objective:
            raise ConfigError(f"the objective function {label!r} is not the config's objective {config.objective!r}")
        try:
            self.hparams = self.spec.hparams(**config.hparams)
        except TypeError as err:
            raise ConfigError(str(err)) from None
        self.views = list(dict.fromkeys([*self.spec.needs, *config.views]))
        check_views(self.views, f"objective {config.objective!r}")
        self.probe_factory = probe_factory

    # -- setup ------------------------------------------------------------------------------------------

    def _setup(self) -> None:
        config = self.config
        needs_retain = self.spec.uses_retain or "mismatch" in self.views
        _seed_everything(config.seed)
        self.procs = processes(default_device(config.device), config.fsdp)
        self.device = self.procs.device
        self.autocast = autocast_factory(config, self.device)
        self.model, self.tokenizer = load_base(config, self.device)
        self.model = stack_lora(self.model, config.lora_stack, self.run_dir, config.model)
        self.ref_model = reference_copy(self.model) if self.spec.uses_ref_model else None
        hint = self.spec.trainable_parameters(self.model, **self.hparams) if config.lora is None else None
        self.model = apply_lora(self.model, config.lora)
        self.trainable = select_trainable(self.model, config, hint)
        if config.gradient_checkpointing:
            enable_checkpointing(self.model)
        self.model.train()
        self.model = self.procs.shard(self.model)  # FSDP2 across processes with config.fsdp, else unchanged
        self.params = [p for _, p in trainable_state(self.model).items()]

        lengths = LengthPolicy.for_model(self.model, self.tokenizer, config.max_length, config.strict_lengths)
        self.data = UnlearningData(self.tokenizer, self.source, config.forget,
                                   config.retain if needs_retain else None, self.views, config.seed,
                                   config.batch_size, config.retain_batch_size, lengths=lengths)
        self.companion = build_companion(self.spec, self.hparams)  # fits probes, re-weights terms, ...
        self.companion.prepare(self.data)
        world = self.procs.world_size
        for name, size in (("batch_size", config.batch_size), ("retain_batch_size", config.retain_batch_size)):
            if size is not None and size % world:
                raise ConfigError(f"{name}={size} must be divisible by the {world} processes")
        self.total = config.total_steps(len(self.data.forget_rows))
        self.probes = [self.data.probe(name, split, config.probe_size) for name, split in config.probes.items()]
        short = [p.name for p in self.probes if len(p.indices) < world]
        if config.fsdp and short:  # every process runs each sharded forward, so each needs probe rows
            raise ConfigError(f"with fsdp each of the {world} processes measures a share of every probe: "
                              f"probe(s) {short} have fewer instances than processes")

        self.optimizer = _optimizer(config, self.params)
        from transformers import get_scheduler

        self.scheduler = get_scheduler(_SCHEDULES[config.schedule], self.optimizer,
                                       num_warmup_steps=config.warmup_steps, num_training_steps=self.total)
        self.recorder = None
        if config.record_every and config.directions and self.probes:
            shares = [p.subset(self.procs.rank, world) for p in self.probes]
            self.recorder = StepRecorder(self.model, shares, config.directions, config.granularity,
                                         config.probe_chunk_size, gather=self.procs.gather,
                                         autocast=self.autocast, probe_factory=self.probe_factory,
                                         dtype=getattr(torch, config.measure_dtype) if config.measure_dtype else None)
        self.writer = RecordWriter(self.run_dir)

    def _prepare_dir(self, resume: bool, status: dict[str, Any]) -> int:
        """Open the claimed run directory (``status``: its run.json as found); return the first step."""
        start, self.seconds_before = 0, float(status.get("seconds", 0.0))
        state: dict[str, Any] = {}
        latest = ckpt.latest_checkpoint(self.run_dir) if resume else None
        if latest is not None:
            start, path = latest
            params, state = ckpt.load_checkpoint(path)
            self.procs.load_params(self.model, params, str(path))
            self.procs.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            ckpt.set_rng_state(state["rng"])
        if self.procs.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.writer.truncate(start)  # no rows from after the checkpoint survive
            self.config.save(self.run_dir / CONFIG_FILE)
            for probe in self.probes:
                write_probe_texts(self.run_dir, probe.name, probe.indices, probe.rows)
            if self.source.heldout_roles:
                write_json(self.run_dir / HELDOUT_FILE, self.source.heldout_record())
            write_status(self.run_dir, "running", step=start, total_steps=self.total, message=None,
                         seconds=self.seconds_before)
        self.procs.barrier()
        context = CompanionContext(self.model, self.run_dir, self.procs.is_main, self.autocast, self.procs.mean,
                                   self.config.seed)
        self.companion.start(context, state.get("companion"))
        return start

    def _verify_kept(self, status: dict[str, Any]) -> None:
        """Check the records a resume keeps (those before its checkpoint), before any work."""
        config, state = self.config, status.get("status")
        if state in ("finished", "diverged"):
            end = int(status.get("step") or 0)
            before = end + 1 if state == "diverged" else end  # the diverged step has a history row only
        else:
            latest = ckpt.latest_checkpoint(self.run_dir)
            end = before = latest[0] if latest else 0
        every = config.record_every if config.directions and config.probes else 0
        verify_records(self.run_dir, before, {s for s in range(end) if every and s % every == 0})

    # -- the loop ---------------------------------------------------------------------------------------

    def run(self, resume: bool = False) -> Run:
        """Claim the run directory, run (or continue) the step loop; returns the :class:`Run` of the directory."""
        # one claim per run: the launch's rank 0 holds it; every rank reads the status before the
        # process group forms, so that no process sees rank 0's new status
        preflight(self.config)
        # every split the run reads is read and checked before the claim and any model load
        needs_retain = self.spec.uses_retain or "mismatch" in self.views
        self.source = run_source(self.config, self.views, needs_retain, f"objective {self.config.objective!r}")
        claim = claim_run_dir(self.run_dir, resume=resume) if launched_rank() == 0 else None
        self.begun = False
        try:
            return self._run(resume, claim.info if claim else read_json(self.run_dir / STATUS_FILE))
        except BaseException:
            if claim is not None and not self.begun:
                claim.abandon()
            raise
        finally:
            if claim is not None:
                claim.release()

    def _run(self, resume: bool, status: dict[str, Any]) -> Run:
        if resume and status.get("status") and launched_rank() == 0:
            self._verify_kept(status)
        if resume and status.get("status") in ("finished", "diverged"):
            return Run(self.run_dir)  # nothing left to do
        self._setup()
        self.begun = True
        start = self._prepare_dir(resume, status)
        self.started = time.perf_counter()
        self.pending: tuple[StepRecord, dict[str, Any]] | None = None
        bar = tqdm(total=self.total, initial=start, desc=f"unlearn {self.config.objective}",
                   disable=not (self.progress and self.procs.is_main), dynamic_ncols=True)
        status, message = "finished", None
        with steady_heap():  # full collections would rescan every library object
            try:
                for step in range(start, self.total):
                    message = self._step(step)
                    bar.update()
                    if message is not None:
                        status = "diverged"
                        self._checkpoint(step)
                        break
                    if (step + 1) % self.config.checkpoint_interval() == 0 or step + 1 == self.total:
                        self._checkpoint(step + 1)
                    elif (step + 1) % self.config.flush_every == 0 and self.procs.is_main:
                        self.writer.flush()
            except BaseException as err:
                if self.procs.is_main:
                    self.writer.flush()
                    write_status(self.run_dir, "failed", message=f"{type(err).__name__}: {err}", seconds=self._seconds())
                raise
            finally:
                bar.close()
                if self.recorder is not None:
                    self.recorder.close()
                self.companion.close()
        if self.procs.is_main:
            write_status(self.run_dir, status, message=message, seconds=self._seconds())
        if message is not None:
            warnings.warn(f"run {str(self.run_dir)!r} stopped: {message}", RuntimeWarning, stacklevel=3)
        return Run(self.run_dir)

    def _seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def _step(self, step: int) -> str | None:
        """One optimiser step; returns a divergence message instead of stepping if a value is non-finite."""
        config, accum = self.config, self.config.grad_accum
        lr = float(self.scheduler.get_last_lr()[0])
        self.companion.before_step(step, lr, lambda: self._objective(step * accum))
        self.optimizer.zero_grad(set_to_none=True)
        loss, parts = 0.0, {}
        for micro in range(accum):
            out = self._objective(step * accum + micro)
            (out.loss / accum).backward()
            loss += float(out.loss.detach()) / accum
            for name, value in out.detached_parts().items():
                parts[name] = parts.get(name, 0.0) + value / accum
        self.procs.average_gradients(self.params)
        loss, parts = self.procs.mean(loss), {k: self.procs.mean(v) for k, v in parts.items()}
        grads = [p.grad for p in self.params if p.grad is not None]
        grad_norm = self.procs.grad_norm(grads)
        row = {"step": step, "loss": loss, **{f"loss_{k}": v for k, v in parts.items()},
               "grad_norm": grad_norm, "lr": lr, **self.companion.history_fields()}
        row.update({f"{key}_{p.name}": math.nan for p in self.probes for key in ("risk", "risk_change")})
        message = _non_finite(step, loss, parts, grad_norm)
        if message is not None:
            self._complete_pending(None)
            self._add(None, row)
            return message

        record = None
        if self.recorder is not None and step % config.record_every == 0:
            record = self.recorder.before_step(step, copy_grads=config.max_grad_norm is not None)
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        if record is None:
            self._add(None, row)
            return None
        self.recorder.after_step()
        self._complete_pending(record.risk)  # R_i(θ_s) is the previous recorded step's "after"
        nxt = step + 1
        if nxt < self.total and nxt % config.record_every == 0 and nxt % config.checkpoint_interval():
            self.pending = (record, row)  # R_i(θ_{s+1}) comes from the next step's measurement
        else:
            record.risk_after = self.recorder.risks()
            self._add(record, row)
        return None

    def _objective(self, draw: int):
        procs = self.procs
        forget = to_device(self.data.forget_batch(draw, procs.rank, procs.world_size), self.device)
        retain = None
        if self.spec.uses_retain:
            retain = to_device(self.data.retain_batch(draw, procs.rank, procs.world_size), self.device)
        with self.autocast():
            return self.spec(self.model, forget, retain, self.ref_model,
                             **{**self.hparams, **self.companion.objective_kwargs()})

    def _complete_pending(self, risk_after: dict[str, torch.Tensor] | None) -> None:
        """Give the pending step its risks after the update (measured now if not given)."""
        if self.pending is None:
            return
        record, row = self.pending
        self.pending = None
        record.risk_after = risk_after if risk_after is not None else self.recorder.risks()
        self._add(record, row)

    def _add(self, record: StepRecord | None, row: dict[str, Any]) -> None:
        if record is not None:
            row.update(record.history_fields())
        if not self.procs.is_main:
            return
        if record is not None:
            self.writer.add("effects", record.effects_frame())
            self.writer.add("risks", record.risks_frame())
        self.writer.add("history", pd.DataFrame([row]))

    def _checkpoint(self, next_step: int) -> None:
        """Flush the records and save everything needed to continue at ``next_step``."""
        self._complete_pending(None)
        self.procs.reshard(self.model)
        params = self.procs.full_state(trainable_state(self.model))  # (sharded: gathered by every process)
        optimizer = self.procs.optimizer_state(self.model, self.optimizer)
        if self.procs.is_main:
            self.writer.flush()
            state = {"step": next_step, "optimizer": optimizer,
                     "scheduler": self.scheduler.state_dict(), "rng": ckpt.rng_state(),
                     "forget_draws": next_step * self.config.grad_accum, "companion": self.companion.state_dict()}
            ckpt.save_checkpoint(self.run_dir, next_step, params, state)
            write_status(self.run_dir, "running", step=next_step, seconds=self._seconds())
        self.procs.barrier()


def _non_finite(step: int, loss: float, parts: dict[str, float], grad_norm: float) -> str | None:
    """A message naming the first non-finite value of this step, or None."""
    for name, value in {**parts, "loss": loss, "gradient norm": grad_norm}.items():
        if not math.isfinite(value):
            what = "loss" if name == "loss" else "gradient norm" if name == "gradient norm" else f"loss part {name!r}"
            return f"non-finite {what} at step {step} ({what} = {value}; loss = {loss})"
    return None


def _optimizer(config: UnlearnConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


