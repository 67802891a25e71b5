"""Turning a config into the model a run trains: load, reference copy, LoRA, trainable subset.

The same steps rebuild a finished run's model (``Run.model``): load the base model,
wrap it with LoRA if the config asks, then overwrite the trainable parameters from the
run's checkpoint. Which parameters train is decided in this order: the config's
``trainable`` regexes, else the LoRA adapters, else the objective's ``trainable`` hint
(e.g. RMU's MLPs around its layer), else all parameters.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Sequence

import torch

from geffect.errors import InputError
from geffect.training.config import ConfigError, UnlearnConfig


def default_device(requested: str | None = None) -> torch.device:
    """``requested``, else CUDA when available, else CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def use_bf16(config: UnlearnConfig, device: torch.device) -> bool:
    """bf16 autocast: the config's choice, else on for CUDA devices that support bf16."""
    if config.bf16 is not None:
        return bool(config.bf16)
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast_factory(config: UnlearnConfig, device: torch.device):
    """A zero-argument callable returning the forward-pass autocast context of the run."""
    if not use_bf16(config, device):
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def load_base(config: UnlearnConfig, device: torch.device):
    """(model, tokenizer) of ``config.model`` on ``device``; problems become a :class:`ConfigError`."""
    from geffect.models import load

    try:
        model, tokenizer = load(config.model, device=device)
    except InputError:
        raise
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"cannot load model {config.model!r}: {err}") from err
    check_tokenizer(model, tokenizer, config.model)
    return model, tokenizer


def check_tokenizer(model: torch.nn.Module, tokenizer, name: str) -> None:
    """Raise if the tokenizer produces ids the model's embedding does not have."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ConfigError(
            f"model/tokenizer mismatch for {name!r}: the tokenizer has {len(tokenizer)} tokens but the "
            f"model's input embedding has only {rows} rows"
        )


def reference_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``model`` in eval mode (the objectives' reference π_ref)."""
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def apply_lora(model: torch.nn.Module, lora: dict | None) -> torch.nn.Module:
    """Wrap ``model`` with peft LoRA adapters built from ``LoraConfig(**lora)`` (no-op for None).

    On a model that already holds stacked modules (:func:`geffect.training.stacking.stack_lora`)
    the new adapter goes on top of them: all active, only the new one trainable.
    """
    if lora is None:
        return model
    from peft import LoraConfig, PeftModel, get_peft_model

    from geffect.training.stacking import OWN_ADAPTER, activate, stacked_adapters

    try:
        lora_config = LoraConfig(**{"task_type": "CAUSAL_LM", **lora})
    except TypeError as err:
        raise ConfigError(f"config field 'lora' is not valid peft.LoraConfig arguments: {err}") from err
    if isinstance(model, PeftModel):
        model.add_adapter(OWN_ADAPTER, lora_config)
        activate(model, stacked_adapters(model), trainable=OWN_ADAPTER)
        return model
    return get_peft_model(model, lora_config)


def select_trainable(model: torch.nn.Module, config: UnlearnConfig, hint: Sequence[str] | None) -> list[str]:
    """Freeze every parameter that should not train; return the trainable names (in model order)."""
    names = [name for name, _ in model.named_parameters()]
    if config.trainable is not None:
        patterns = [re.compile(p) for p in config.trainable]
        chosen = {n for n in names if any(p.search(n) for p in patterns)}
        what = f"config field 'trainable' {config.trainable}"
    elif config.lora is not None:
        chosen = {n for n, p in model.named_parameters() if p.requires_grad}
        what = "the LoRA adapters"
    elif hint is not None:
        chosen = set(hint)
        unknown = sorted(chosen - set(names))
        if unknown:
            raise ConfigError(f"the objective's trainable hint names parameters the model lacks: {unknown[:5]}")
        what = "the objective's trainable hint"
    else:
        chosen = set(names)
        what = "all parameters"
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)
    if not chosen:
        raise ConfigError(f"no parameter is trainable: {what} matched none of the model's parameters")
    return [n for n in names if n in chosen]


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name (what checkpoints store)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, params: dict[str, torch.Tensor], where: str) -> None:
    """Copy checkpointed parameters into ``model``'s trainable parameters (names must match)."""
    own = trainable_state(model)
    if set(own) != set(params):
        missing, extra = sorted(set(own) - set(params)), sorted(set(params) - set(own))
        raise ValueError(f"checkpoint {where} does not match the run's trainable parameters "
                         f"(missing {missing[:3]}, unexpected {extra[:3]}); was the config changed?")
    with torch.no_grad():
        for name, param in own.items():
            param.copy_(params[name])


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Non-reentrant activation checkpointing, without the input-requires-grad hook.

    Hugging Face also makes the embedding output require grad (needed only by reentrant
    checkpointing); that would hide from the G-effect engine where the trainable part of the
    network starts, so it is removed again. Checkpointing acts in training mode only, so
    probe measurements (in eval mode) run a plain forward.
    """
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable()  # transformers >= 5: non-reentrant by default
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        model.disable_input_require_grads()
    except AttributeError:  # no hook was registered
        pass
