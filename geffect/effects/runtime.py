"""Running the model for a measurement: deterministic mode, logits, and the autograd graph checks."""

from __future__ import annotations

import inspect
import warnings
import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from geffect.data.lengths import LengthWarning, model_context
from geffect.effects.batch import ProbeBatch, instance_risks, prepare_batch, target_nll
from geffect.effects.groups import Site
from geffect.effects.rules import GenericRule


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def measuring(model: nn.Module, dtype: torch.dtype | None = None) -> Iterator[None]:
    """Eval mode, restored afterwards; with ``dtype``, also that floating precision.

    Dropout is off (the G-effect is a property of the parameters), and Hugging Face activation
    checkpointing, which would re-run module forwards during backward, only acts in training mode.
    ``dtype`` (e.g. float32 for a bf16 model) casts floating parameters and buffers for the
    duration, with autocast off, and puts the original tensors back afterwards (bit for bit).
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with precision(model, dtype):
            yield
    finally:
        for module, mode in modes:
            module.training = mode


@contextmanager
def precision(model: nn.Module, dtype: torch.dtype | None) -> Iterator[None]:
    """Floating parameters and buffers of ``model`` in ``dtype`` (autocast off) for the duration."""
    if dtype is None:
        yield
        return
    if not dtype.is_floating_point:
        raise ValueError(f"measurement dtype must be a floating dtype, got {dtype}")
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point() and t.dtype != dtype]
    kept = [t.data for t in tensors]
    try:
        for tensor in tensors:
            tensor.data = tensor.data.to(dtype)
        with torch.autocast(model_device(model).type, enabled=False):
            yield
    finally:
        for tensor, data in zip(tensors, kept):
            tensor.data = data


_MASK_SUPPORT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def takes_label_mask(model: nn.Module) -> bool:
    """Whether ``model`` slices its head's input with transformers' ``slice_logits_to_keep``, which
    takes a boolean ``logits_to_keep`` mask and returns only the masked rows, flattened.

    Read from the code of the first module whose ``forward`` has a ``logits_to_keep`` argument
    (so wrappers such as PEFT models are looked through); cached per model.
    """
    known = _MASK_SUPPORT.get(model)
    if known is None:
        known = False
        for module in model.modules():
            forward = getattr(type(module), "forward", None)
            code = getattr(inspect.unwrap(forward), "__code__", None) if forward is not None else None
            if code is not None and "logits_to_keep" in code.co_varnames:
                known = "slice_logits_to_keep" in code.co_names
                break
        _MASK_SUPPORT[model] = known
    return known


def forward_logits(model: nn.Module, probe: ProbeBatch, flat: bool = False) -> torch.Tensor:
    """Logits of the probe's (possibly re-laid-out) inputs, without a key/value cache.

    Only at the positions that predict labels when the model honours ``logits_to_keep``: with
    ``flat`` and a model that takes a boolean mask (:func:`takes_label_mask`), the label rows
    flattened (N × V, in target order); else per row (``probe.keep``, B × K × V); otherwise at
    every position. ``target_nll`` tells them apart by shape.
    """
    context = model_context(model)
    if context is not None and int(probe.inputs["position_ids"].max()) >= context:
        warnings.warn(f"probe inputs reach position {int(probe.inputs['position_ids'].max())} but "
                      f"{type(model).__name__} has {context} positions: effects past its context measure "
                      "extrapolation (truncate the rows, e.g. encode_row(..., max_length=...))", LengthWarning,
                      stacklevel=3)
    masked = flat and probe.label_mask is not None and takes_label_mask(model)
    extra = {}
    if masked:
        extra = {"logits_to_keep": probe.label_mask}
    elif probe.keep is not None:
        extra = {"logits_to_keep": probe.keep}
    try:
        output = model(**probe.inputs, use_cache=False, **extra)
    except TypeError as error:
        if not extra or "logits_to_keep" not in str(error):
            raise
        output = model(**probe.inputs, use_cache=False)
    logits = getattr(output, "logits", None)
    if logits is None:
        logits = output[0] if isinstance(output, (tuple, list)) else output
    if masked:
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != probe.rows.numel():
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise TypeError(f"{type(model).__name__} returned logits shaped {shape} for a boolean logits_to_keep "
                            f"mask; expected ({probe.rows.numel()}, vocab), one row per label")
        return logits
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise TypeError(f"{type(model).__name__} did not return (batch, length, vocab) logits")
    length = probe.inputs["input_ids"].shape[1]
    if logits.shape[1] != length and (probe.keep is None or logits.shape[1] != probe.keep.shape[1]):
        raise TypeError(f"{type(model).__name__} returned logits for {logits.shape[1]} positions; expected "
                        f"{length} (all) or {probe.keep.shape[1] if probe.keep is not None else length} "
                        "(those asked for with logits_to_keep)")
    return logits


@torch.no_grad()
def probe_risks(model: nn.Module, batch, chunk_size: int | None = None, reduction: str = "instance") -> torch.Tensor:
    """R_i of every instance of ``batch`` at the current parameters, exactly as ``EffectProbe``
    defines them, from no-grad forward passes with logits only at label positions (float64, CPU)."""
    probe = prepare_batch(batch, reduction).to(model_device(model))
    return torch.cat([instance_risks(target_nll(forward_logits(model, chunk, flat=True), chunk), chunk).cpu()
                      for _, chunk in probe.chunks(chunk_size)])


def parameter_uses(root: torch.Tensor) -> Counter:
    """How many autograd edges lead into each leaf tensor (by id) in the graph of ``root``."""
    seen, uses, stack = set(), Counter(), [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for fn, _ in node.next_functions:
            variable = getattr(fn, "variable", None)
            if variable is not None:
                uses[id(variable)] += 1
            else:
                stack.append(fn)
    return uses


def coverage_gaps(root: torch.Tensor, sites: list[Site], calls: Counter, rules: list,
                  model: nn.Module) -> list[tuple[list[Site], str]]:
    """Trainable parameters entering the loss other than through their own module's forward.

    Every parameter use in the graph is an autograd edge into the parameter; a module with a
    closed-form rule (Linear, Embedding, LayerNorm, Conv1D) makes exactly one per call, so more
    edges than recorded calls mean a use the hooks did not see (e.g. a weight a parent module
    uses functionally). Modules under the generic rule may use a parameter several times in one
    call, so for them only a use without any recorded call is detected. Returns, per such
    parameter, its owning sites and a one-line explanation.
    """
    params = dict(model.named_parameters())
    uses = parameter_uses(root)
    seen: Counter = Counter()
    exact: dict[str, bool] = {}
    for site, rule in zip(sites, rules):
        for name in site.params.values():
            seen[name] += calls[site.index]
            exact[name] = exact.get(name, True) and not isinstance(rule, GenericRule)
    gaps = []
    for name in exact:
        found = uses[id(params[name])]
        if (found and not seen[name]) or (exact[name] and found > seen[name]):
            owners = [site for site in sites if name in site.params.values()]
            gaps.append((owners, f"parameter {name!r} enters the loss {found} time(s) but only {seen[name]} use(s) go "
                                 f"through the forward of its module(s) {[s.path for s in owners]}; it is also used "
                                 "elsewhere (e.g. functionally by a parent module), which geffect has no rule for"))
    return gaps
