"""Stacked LoRA modules: earlier runs' adapters loaded frozen and kept active beneath a new one.

Iterative procedures (Reveal and Release, issue #11) train one LoRA module per iteration, each
an ordinary run directory. A run whose config lists earlier runs in ``lora_stack`` starts from the
base model with each earlier run's trained adapter added under the name ``stack{k}``, frozen, and
all of them active; :func:`geffect.training.modeling.apply_lora` then adds the run's own adapter
(``default``) on top. Only ``default`` trains and is checkpointed, so each run stores exactly its
own module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from geffect.training import checkpoint as ckpt
from geffect.training.config import CONFIG_FILE, ConfigError, UnlearnConfig

STACK_PREFIX = "stack"
OWN_ADAPTER = "default"  # the adapter a LoRA run trains (peft's default name)


def stacked_name(index: int) -> str:
    """The adapter name of the ``index``-th stacked module."""
    return f"{STACK_PREFIX}{index}"


def resolve_stack(runs: Sequence[str], run_dir: str | Path | None) -> list[Path]:
    """Run directories of ``runs``; relative paths are taken from ``run_dir`` (the stacking run's)."""
    paths = []
    for run in runs:
        path = Path(run)
        if not path.is_absolute() and run_dir is not None:
            path = Path(os.path.normpath(Path(run_dir) / path))  # lexically: run_dir may not exist yet
        if not (path / CONFIG_FILE).is_file():
            raise ConfigError(f"lora_stack entry {run!r} is not a run directory (no {CONFIG_FILE} in {str(path)!r})")
        paths.append(path)
    return paths


def _rename(name: str, adapter: str) -> str:
    """A parameter name of adapter ``default`` renamed to ``adapter`` (``...lora_A.default.weight``)."""
    return re.sub(rf"(\.lora_[A-Za-z_]+)\.{OWN_ADAPTER}(?=\.|$)", rf"\1.{adapter}", name)


def stack_lora(model: torch.nn.Module, runs: Sequence[str] | None, run_dir: str | Path | None = None,
               model_name: str | None = None) -> torch.nn.Module:
    """``model`` wrapped by peft with the trained module of each run in ``runs`` (frozen, active).

    ``model_name``: the base model this run uses; every stacked run must have used the same one.
    Returns ``model`` unchanged when ``runs`` is empty or ``None``.
    """
    if not runs:
        return model
    from peft import LoraConfig, PeftModel, get_peft_model

    names = []
    for index, path in enumerate(resolve_stack(runs, run_dir)):
        config = UnlearnConfig.load(path)
        if config.lora is None:
            raise ConfigError(f"lora_stack run {str(path)!r} did not train a LoRA module (its config has no lora)")
        if model_name is not None and config.model != model_name:
            raise ConfigError(f"lora_stack run {str(path)!r} trained on model {config.model!r}, not {model_name!r}")
        latest = ckpt.latest_checkpoint(path)
        if latest is None:
            raise ConfigError(f"lora_stack run {str(path)!r} has no checkpoint")
        name = stacked_name(index)
        lora = LoraConfig(**{"task_type": "CAUSAL_LM", **config.lora})
        if isinstance(model, PeftModel):
            model.add_adapter(name, lora)
        else:
            model = get_peft_model(model, lora, adapter_name=name)
        params, _ = ckpt.load_checkpoint(latest[1])
        own = dict(model.named_parameters())
        renamed = {_rename(k, name): v for k, v in params.items()}
        unknown = sorted(set(renamed) - set(own))
        if unknown:
            raise ConfigError(f"lora_stack run {str(path)!r} holds parameters the model lacks: {unknown[:3]}")
        with torch.no_grad():
            for key, value in renamed.items():
                own[key].copy_(value)
        names.append(name)
    activate(model, names)
    return model


def activate(model: torch.nn.Module, adapters: Sequence[str], trainable: str | None = None) -> None:
    """Make ``adapters`` (and ``trainable``) active together; only ``trainable`` keeps gradients."""
    model.base_model.set_adapter([*adapters, *([trainable] if trainable else [])])
    for name, param in model.named_parameters():
        if ".lora_" in name:
            param.requires_grad_(trainable is not None and f".{trainable}." in f"{name}.")


def stacked_adapters(model: torch.nn.Module) -> list[str]:
    """Names of the stacked (frozen, earlier) adapters of ``model``, in stacking order."""
    config = getattr(model, "peft_config", {}) or {}
    return sorted((n for n in config if n.startswith(STACK_PREFIX)), key=lambda n: int(n[len(STACK_PREFIX):]))
