"""``Run``: a run directory as a Python object (tables, config, status, model, task evaluation).

``geffect.unlearn`` returns one, and ``Run(path)`` opens any run directory, also while
its trainer is still writing (tables are re-read on every access, so they show the rows
flushed so far). ``.model`` rebuilds the unlearned model lazily: the base model named by
the config, LoRA adapters if any, then the trainable parameters of the newest checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from geffect.training import checkpoint as ckpt
from geffect.training.config import CONFIG_FILE, ConfigError, UnlearnConfig
from geffect.training.records import read_table
from geffect.training.rundir import HELDOUT_FILE, METRICS_FILE, STATUS_FILE, read_json, write_json


class Run:
    """The records and results of one unlearning run stored in ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{str(self.path)!r} is not a geffect run directory (no {CONFIG_FILE})")
        self.config = UnlearnConfig.load(self.path)
        self._model = None
        self._tokenizer = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, objective={self.config.objective!r}, status={self.status!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # -- records ------------------------------------------------------------------------------------

    @property
    def effects(self) -> pd.DataFrame:
        """G-effects: step, probe, instance, layer, direction ("gradient"/"update"), value."""
        return read_table(self.path, "effects")

    @property
    def history(self) -> pd.DataFrame:
        """One row per step: loss, loss_<part>, grad_norm, lr, risk_<probe>, risk_change_<probe>."""
        return read_table(self.path, "history")

    @property
    def risks(self) -> pd.DataFrame:
        """Per recorded step and probe instance: risk, risk_after, predicted_change."""
        return read_table(self.path, "risks")

    @property
    def info(self) -> dict[str, Any]:
        """The contents of ``run.json`` (status, step, total_steps, message, seconds)."""
        return read_json(self.path / STATUS_FILE)

    @property
    def status(self) -> str | None:
        """``running``, ``finished``, ``failed`` or ``diverged``."""
        return self.info.get("status")

    @property
    def metrics(self) -> dict[str, Any]:
        """Evaluation metrics written by :meth:`evaluate` (empty before)."""
        return read_json(self.path / METRICS_FILE)

    # -- model --------------------------------------------------------------------------------------

    def _load(self, device=None) -> None:
        from geffect.training.modeling import apply_lora, default_device, load_base

        latest = ckpt.latest_checkpoint(self.path)
        if latest is None:
            raise FileNotFoundError(f"run {str(self.path)!r} has no checkpoint to load the model from")
        from geffect.training.stacking import stack_lora

        model, tokenizer = load_base(self.config, default_device(device or self.config.device))
        model = stack_lora(model, self.config.lora_stack, self.path, self.config.model)
        model = apply_lora(model, self.config.lora)
        params, _ = ckpt.load_checkpoint(latest[1])
        own = dict(model.named_parameters())
        missing = sorted(set(params) - set(own))
        if missing:
            raise ValueError(f"checkpoint {latest[1]} holds parameters the model lacks: {missing[:3]}")
        import torch

        with torch.no_grad():
            for name, value in params.items():
                own[name].copy_(value)
        self._model, self._tokenizer = model.eval(), tokenizer

    @property
    def model(self):
        """The unlearned model (loaded on first access, in eval mode)."""
        if self._model is None:
            self._load()
        return self._model

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._load()
        return self._tokenizer

    # -- evaluation ---------------------------------------------------------------------------------

    @property
    def task(self):
        """The run's :class:`geffect.tasks.Task` (from its config; runs before tasks existed are ``tofu``)."""
        return self.config.get_task()

    def default_retain_model(self) -> str | None:
        """The task's reference model for this run (``tiny`` → ``tiny-retain90`` for tofu), if it has one."""
        from geffect.tasks.context import default_reference

        config = self.config.resolved()
        return default_reference(self.task, config.model, config.forget, config.retain, config.data)

    def eval_context(self, reference_model: Any = "default", **kwargs: Any):
        """The :class:`geffect.tasks.EvalContext` of this run (its task, splits, held-out rows, models)."""
        from geffect.tasks import make_context

        config = self.config.resolved()
        return make_context(self.task, forget=config.forget, retain=config.retain, data=config.data,
                            model_name=config.model, reference=reference_model, holdout=config.holdout,
                            seed=config.seed, run_dir=self.path, **kwargs)

    def evaluate(self, reference_model: Any = "default", **kwargs: Any) -> dict[str, Any]:
        """The run's task evaluation of the unlearned model; writes ``metrics.json``.

        The suite is the task's (``geffect tasks`` lists them; TOFU metrics for ``tofu``, NLL and
        ROUGE-L on trained and held-out rows for ``files``). ``reference_model``: the model that
        never saw the forget data — a loaded model, a name for ``geffect.models.load``,
        ``"default"`` (the task's shipped reference for this run, when there is one) or ``None``.
        ``retain_model=`` is accepted as its older name. Other keywords: ``max_examples``,
        ``batch_size``, ``progress`` and options of the task's suite (e.g. TOFU's
        ``retain_truth_ratios``).
        """
        from geffect.tasks.context import run_suite

        steps = self.info.get("step")  # a damaged run.json stops here, before any model loads
        if "retain_model" in kwargs:
            reference_model = kwargs.pop("retain_model")
        ctx = self.eval_context(reference_model, **kwargs)
        self._check_heldout(ctx)
        metrics = run_suite(self.model, self.tokenizer, ctx)
        metrics = {**metrics, "objective": self.config.objective, "steps": steps}
        write_json(self.path / METRICS_FILE, metrics)
        return metrics

    def _check_heldout(self, ctx) -> None:
        """Refuse to evaluate when the data changed since training (the held-out rows would differ)."""
        recorded = read_json(self.path / HELDOUT_FILE)
        if recorded and recorded != ctx.data.heldout_record():
            raise ConfigError(f"the data of run {str(self.path)!r} changed since it was trained: its held-out rows "
                              f"({HELDOUT_FILE}) no longer match the files; evaluate with the original files")
