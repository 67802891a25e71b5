"""``ObjectiveCallback``: a geffect objective, with its training companion, inside a Hugging Face ``Trainer``.

``geffect.unlearn`` runs an objective's companion (``geffect.training.companions``: fitted probe
directions, learned term weights) around its own step loop; this callback does the same for a
``transformers.Trainer``. Build it from the objective and the forget / retain rows, train on
``callback.forget_rows`` / ``callback.retain_rows`` (what is left once the companion has held its
validation rows out), and return ``callback.loss(model, forget, retain)`` from ``compute_loss``:

    callback = ObjectiveCallback("meta_cosine_rmu", forget=rows, retain=other_rows, tokenizer=tok)
    class Unlearner(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            return callback.loss(model, inputs["forget"], inputs["retain"])

Events used: ``on_train_begin`` starts the companion on the model (a frozen reference copy is made
then if the objective needs one), ``on_step_begin`` calls its ``before_step`` with an objective
evaluated on draw ``step`` of the callback's own batches of the training rows (the Trainer's batch
is not known yet at that point), and the weights and signals it reports are collected per step in
``.history`` (and ``out/companion_history.parquet`` when ``out`` is given, where fitted probes are
cached too). Add ``GEffectCallback`` beside it to record G-effects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import TrainerCallback

from geffect.tasks import Task, TaskData
from geffect.training.companions import CompanionContext, build_companion
from geffect.training.data import UnlearningData, to_device
from geffect.training.modeling import reference_copy
from geffect.training.records import write_atomic

HISTORY_FILE = "companion_history.parquet"


class ObjectiveCallback(TrainerCallback):
    """Run ``objective``'s training companion in a HF ``Trainer`` and compute its loss (module docstring).

    ``forget`` / ``retain``: rows of any kind — question/answer, prompt/response or text — (a list,
    a ``datasets.Dataset`` or a data file).
    ``hparams``: the objective's hyper-parameters. ``batch_size`` and ``seed`` decide the
    callback's own draws (probe fitting, per-term gradients); ``out`` a folder for its files.
    """

    def __init__(self, objective: Any, *, forget: Sequence[Mapping[str, Any]], tokenizer: Any,
                 retain: Sequence[Mapping[str, Any]] | None = None, hparams: Mapping[str, Any] | None = None,
                 batch_size: int = 8, seed: int = 0, out: str | Path | None = None) -> None:
        from geffect.objectives import resolve_objective

        self.spec = resolve_objective(objective)
        self.hparams = self.spec.hparams(**dict(hparams or {}))
        self.companion = build_companion(self.spec, self.hparams)
        splits = {"forget": forget, **({"retain": retain} if retain else {})}
        rows = TaskData(Task(name="callback_rows", description="rows given to ObjectiveCallback", forget="forget",
                             splits=splits))  # checked by the one loader, like every split
        self.data = UnlearningData(tokenizer, rows, "forget", "retain" if retain else None, (), seed, batch_size)
        self.companion.prepare(self.data)  # may take validation rows out of the training rows
        self.seed, self.out = seed, Path(out) if out is not None else None
        self.ref_model: torch.nn.Module | None = None
        self._rows: list[dict[str, Any]] = []
        self._fields: dict[str, float] = {}

    @property
    def forget_rows(self) -> list[dict[str, Any]]:
        """The forget rows to train on (the companion's held-out rows removed)."""
        return list(self.data.forget_rows)

    @property
    def retain_rows(self) -> list[dict[str, Any]]:
        """The retain rows to train on (the companion's held-out rows removed)."""
        return list(self.data.retain_rows)

    @property
    def history(self) -> pd.DataFrame:
        """Per step: what the companion reported (e.g. ``weight_<term>``, ``meta_objective``)."""
        return pd.DataFrame(self._rows)

    def loss(self, model: torch.nn.Module, forget: Mapping[str, Any], retain: Mapping[str, Any] | None = None,
             ref_model: torch.nn.Module | None = None) -> torch.Tensor:
        """The objective's loss on these batches with the companion's current arguments (weights, probes)."""
        return self._output(model, forget, retain, ref_model).loss

    def _output(self, model, forget, retain, ref_model=None):
        kwargs = {**self.hparams, **self.companion.objective_kwargs()}
        return self.spec(model, forget, retain, ref_model or self.ref_model, **kwargs)

    # -- events ---------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.spec.uses_ref_model and self.ref_model is None:
            self.ref_model = reference_copy(model)
        autocast = None
        if getattr(args, "bf16", False):
            device = next(model.parameters()).device
            autocast = lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)  # noqa: E731
        context = CompanionContext(model, self.out, getattr(state, "is_world_process_zero", True), seed=self.seed)
        if autocast is not None:
            context.autocast = autocast
        self.companion.start(context)

    def on_step_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        step = state.global_step
        lr = float(lr_scheduler.get_last_lr()[0]) if lr_scheduler is not None else float(args.learning_rate)
        device = next(model.parameters()).device

        def objective():
            forget = to_device(self.data.forget_batch(step), device)
            retain = to_device(self.data.retain_batch(step), device)
            return self._output(model, forget, retain)

        self.companion.before_step(step, lr, objective)
        self._rows.append({"step": step, **self.companion.history_fields()})

    def on_train_end(self, args, state, control, **kwargs):
        if self.out is not None and self._rows:
            write_atomic(self.history, self.out / HISTORY_FILE)
        self.companion.close()
