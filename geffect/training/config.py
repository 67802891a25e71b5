"""The settings of one unlearning run, as a dataclass that round-trips through ``config.yaml``.

Everything that decides what a run computes lives here (objective and its
hyper-parameters, data splits, probes, optimiser, schedule, recording), so that a
run directory's ``config.yaml`` is enough to reproduce it and to resume it after a
crash. :meth:`UnlearnConfig.resolved` fills the defaults that depend on other
fields (the retain split complementing the forget split, the default probes), and
the resolved form is what the trainer writes.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from geffect.errors import DamagedRunError, InputError, one_line
from geffect.schema import DIRECTION_GRADIENT, DIRECTION_UPDATE

DEFAULT_STEPS = 30
DEFAULT_PROBE_SIZE = 32
# AdamW learning rate that visibly unlearns the shipped ``tiny`` target in DEFAULT_STEPS steps with
# GA, NPO and WGA (label-smoothed tiny, probes of 32: forget risk 0.40 -> 9.8 / 6.2 / 7.4 nats per
# token, retain 0.36 -> 7.8 / 4.3 / 5.6, i.e. past forgetting into collapse for GA-type objectives);
# 1e-4 left the tiny of the first build where it was.
DEFAULT_LR = 5e-4
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "linear", "cosine")
DIRECTIONS = (DIRECTION_GRADIENT, DIRECTION_UPDATE)
GRANULARITIES = ("layer", "module")
MEASURE_DTYPES = ("float32", "float64", "bfloat16", "float16")
CONFIG_FILE = "config.yaml"


class ConfigError(InputError):
    """A run cannot start as configured (bad field, unknown objective, missing split or model):
    a problem the user fixes; the CLI prints it as one line."""


Settings = TypeVar("Settings")


def from_known_fields(cls: type[Settings], values: dict[str, Any], what: str) -> Settings:
    """``cls(**values)`` for a dataclass ``cls``, refusing keys that are none of its fields.

    A misspelt setting must fail loudly rather than leave the field at its default. ``what``
    names one key in the :class:`ConfigError`, e.g. ``"config field"`` gives "unknown config
    field(s) ['lr_'] ...; known config fields: [...]".
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {what}(s) {unknown}; known {what}s: {sorted(known)}")
    return cls(**values)


def _anchor(name: Any, folders: bool = False) -> Any:
    """An existing local file (or, with ``folders``, folder) as an absolute path; anything else (split
    names, hub ids) as is. Existing files win over split names, as in :class:`geffect.tasks.TaskData`."""
    if not isinstance(name, str):
        return name
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_file() or (folders and path.is_dir()) else name


def anchored(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (config fields) with local data files, the data folder and a ``file.py:TASK`` task made
    absolute, so that a run's ``config.yaml`` finds them from any directory (``geffect evaluate RUN``)."""
    out = dict(values)
    if isinstance(out.get("task"), str):
        from geffect.objectives.loading import file_reference

        out["task"] = file_reference(out["task"])
    if "data" in out:
        out["data"] = _anchor(out["data"], folders=True)
    for key in ("forget", "retain"):
        if key in out:
            out[key] = _anchor(out[key])
    if isinstance(out.get("probes"), dict):
        out["probes"] = {name: _anchor(split) for name, split in out["probes"].items()}
    return out


@dataclass
class UnlearnConfig:
    """All settings of an unlearning run (see the field comments; defaults suit the shipped ``tiny`` model).

    ``objective`` is a registered objective name (``geffect objectives`` lists them) or
    ``"package.module:function"`` naming an importable function with the objective signature.
    ``task`` names the unlearning task whose splits, probes and evaluation the run uses
    (``geffect.tasks``); ``forget``, ``retain`` and probe values are split names of that task or
    data files. ``probes`` maps a probe name to a split (``None``: ``forget`` and ``retain``
    probes on the training splits plus the task's own); each probe uses ``probe_size`` instances
    drawn with the run's seed (``None``: the whole split).
    """

    objective: str = "ga"
    hparams: dict[str, Any] = field(default_factory=dict)  # objective keyword hyper-parameters
    model: str = "tiny"  # shipped model name or a Hugging Face model directory
    task: str | None = None  # registered task (`geffect tasks`); None: "files" for a forget file/hub id, else "tofu"
    data: str | None = None  # None: the task's own data; else a folder (tofu: a TOFU directory) or hub id
    forget: str | None = None  # split name or data file; None: the task's forget split (tofu: forget10)
    retain: str | None = None  # None: the task's retain split for ``forget`` (tofu: the complement, retain90)
    probes: dict[str, str] | None = None
    probe_size: int | None = DEFAULT_PROBE_SIZE
    probe_chunk_size: int | None = None  # instances per engine pass (memory bound); None: all
    views: list[str] = field(default_factory=list)  # extra forget views beyond the objective's needs
    holdout: float | None = None  # fraction of forget/retain rows kept out of training; None: the task's
    optimizer: str = "adamw"
    lr: float = DEFAULT_LR
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float | None = None  # gradient clipping (after the gradient G-effect is recorded)
    steps: int | None = None  # None with epochs None: DEFAULT_STEPS
    epochs: float | None = None
    batch_size: int = 8  # forget examples per micro-batch
    retain_batch_size: int | None = None  # None: batch_size
    grad_accum: int = 1  # micro-batches per optimiser step
    seed: int = 0
    record_every: int = 1  # record G-effects every k steps (0: never)
    directions: list[str] = field(default_factory=lambda: list(DIRECTIONS))
    granularity: str = "layer"  # "layer" groups or single "module"s
    checkpoint_every: int | None = None  # steps between checkpoints; None: at every flush (and the last step)
    flush_every: int = 10  # steps between record flushes to disk
    lora: dict[str, Any] | None = None  # peft.LoraConfig keyword arguments, or None for full fine-tuning
    lora_stack: list[str] | None = None  # earlier LoRA runs whose modules load frozen beneath this one's
    trainable: list[str] | None = None  # regexes of trainable parameter names; None: objective's hint or all
    gradient_checkpointing: bool = False
    bf16: bool | None = None  # bf16 autocast; None: on when CUDA supports it
    device: str | None = None  # None: CUDA when available, else CPU
    max_length: int | None = None  # tokens per row; None: the model's context (min with the tokenizer's limit)
    strict_lengths: bool = False  # refuse rows longer than that instead of truncating them (one warning per split)
    measure_dtype: str | None = None  # G-effects measured in this precision (e.g. "float32" for a bf16 model)
    fsdp: bool = False  # shard parameters, gradients and optimiser states with FSDP2 across launched processes

    # -- derived defaults -------------------------------------------------------------------

    def task_name(self) -> str:
        """The run's task: ``task``, else ``files`` when ``forget`` is a data file or hub id, else ``tofu``."""
        if self.task is not None:
            return self.task
        from geffect.data.files import is_data_file, looks_like_hub_id

        own_data = self.forget is not None and (is_data_file(self.forget) or looks_like_hub_id(self.forget))
        return "files" if own_data else "tofu"

    def resolved(self) -> UnlearnConfig:
        """A validated copy with the task, forget and retain splits, probes and holdout filled in."""
        self.validate()
        task = self.get_task()
        own = anchored(self.to_dict())
        forget = own["forget"] if own["forget"] is not None else task.forget
        retain = own["retain"] if own["retain"] is not None else task.retain_split(forget)
        probes = dict(own["probes"]) if own["probes"] is not None else task.default_probes(forget, retain)
        holdout = self.holdout if self.holdout is not None else task.holdout
        return dataclasses.replace(self, task=task.name if self.task is None else own["task"], data=own["data"],
                                   forget=forget, retain=retain, probes=probes, holdout=holdout)

    def get_task(self):
        """The :class:`geffect.tasks.Task` of the run (an unknown name is a :class:`ConfigError`)."""
        from geffect.tasks import UnknownTask, get_task

        try:
            return get_task(self.task_name())
        except UnknownTask as err:
            raise ConfigError(str(err)) from None

    def checkpoint_interval(self) -> int:
        """Steps between checkpoints: ``checkpoint_every``, else ``flush_every`` (so that a killed run
        resumes from its last flush and no flushed record has to be recomputed)."""
        return self.checkpoint_every if self.checkpoint_every is not None else self.flush_every

    def total_steps(self, n_forget: int) -> int:
        """Optimiser steps of the run: ``steps``, or ``epochs`` passes over ``n_forget`` examples."""
        if self.epochs is None:
            return self.steps if self.steps is not None else DEFAULT_STEPS
        per_step = self.batch_size * self.grad_accum
        return max(1, round(self.epochs * n_forget / per_step))

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first field whose value is not allowed."""
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("granularity", self.granularity, GRANULARITIES)
        for direction in self.directions:
            _choice("directions", direction, DIRECTIONS)
        for name in ("batch_size", "grad_accum", "flush_every"):
            _positive(name, getattr(self, name))
        for name in ("retain_batch_size", "probe_size", "probe_chunk_size", "steps", "checkpoint_every"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if self.record_every < 0:
            raise ConfigError(f"config field 'record_every' must be >= 0 (0 = never), got {self.record_every}")
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("config fields 'steps' and 'epochs' are exclusive: set only one of them")
        for name in ("lr", "weight_decay", "epochs", "max_grad_norm"):
            if getattr(self, name) is not None:
                _finite(name, getattr(self, name))
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"config field 'epochs' must be > 0, got {self.epochs}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"config field 'max_grad_norm' must be > 0, got {self.max_grad_norm}")
        if not isinstance(self.warmup_steps, int) or isinstance(self.warmup_steps, bool):
            raise ConfigError(f"config field 'warmup_steps' must be an integer, got {self.warmup_steps!r}")
        if self.lr < 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ConfigError("config fields 'lr', 'weight_decay' and 'warmup_steps' must be >= 0")
        if self.holdout is not None and not (isinstance(self.holdout, (int, float)) and 0 <= self.holdout < 1):
            raise ConfigError(f"config field 'holdout' must be a fraction in [0, 1), got {self.holdout!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or isinstance(self.max_length, bool)
                                            or self.max_length < 2):
            raise ConfigError(f"config field 'max_length' must be an integer >= 2, got {self.max_length!r}")
        for name in ("strict_lengths", "fsdp"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"config field {name!r} must be true or false, got {getattr(self, name)!r}")
        if self.measure_dtype is not None:
            _choice("measure_dtype", self.measure_dtype, MEASURE_DTYPES)
        if self.lora is not None and not isinstance(self.lora, dict):
            raise ConfigError(f"config field 'lora' must be a mapping of peft.LoraConfig arguments, got {self.lora!r}")
        if self.lora_stack is not None and (self.lora is None or not isinstance(self.lora_stack, list)):
            raise ConfigError("config field 'lora_stack' must be a list of run directories and needs 'lora' "
                              f"(the module trained on top of them); got lora_stack={self.lora_stack!r}")

    # -- YAML round trip ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> UnlearnConfig:
        """Build from a mapping; unknown keys are an error (a typo must not pass silently)."""
        return from_known_fields(cls, values, "config field")

    def save(self, path: str | Path) -> Path:
        """Write the config as YAML (keys in field order)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        os.replace(tmp, path)  # a reader never sees half a file
        return path

    @classmethod
    def load(cls, path: str | Path) -> UnlearnConfig:
        """Read a config written by :meth:`save` (a run directory is read at its ``config.yaml``)."""
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no run config at {str(path)!r}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise DamagedRunError(f"{str(path)!r} is not readable YAML: {one_line(err)}") from None
        if not isinstance(values, dict):
            raise DamagedRunError(f"{str(path)!r} does not hold a mapping of config fields")
        return cls.from_dict(values)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"config field {name!r} must be one of {list(allowed)}, got {value!r}")


def _finite(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"config field {name!r} must be a finite number, got {value!r}")


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"config field {name!r} must be a positive integer, got {value!r}")
