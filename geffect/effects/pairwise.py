"""Pairwise effects ``<∇ℓ_j, ∇R_i>``: which forget instance drives which probe instance's change.

For an objective that decomposes over forget instances, ``L = mean_j ℓ_j`` (GA, WGA, NPO, ...),
the G-effect on probe instance ``i`` is the mean over ``j`` of ``P[j, i] = <∇ℓ_j, ∇R_i>``; the
matrix ``P`` (per layer group) says which forget example causes which collateral change.

No per-instance full gradient is stored. One forward/backward of ``Σ_j ℓ_j`` records, at each
module owning parameters, its inputs and output gradients (the two factors of the per-instance
weight gradients ``G_j = Σ_t g_{j,t} x_{j,t}ᵀ``); one forward/backward of ``Σ_i R_i`` on the probe
batch then contracts, at each module as its output gradient arrives, the probe factors with the
stored forget factors (``geffect.effects.rules``: Gram identity or row-sliced gradients for linear
layers, shared-token rows for embeddings, per-instance gradients for small modules). Neither
backward forms weight gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from geffect.effects.batch import prepare_batch, target_nll, vocabulary_size
from geffect.effects.groups import Site, check_granularity, find_sites, ordered_columns
from geffect.effects.hooks import SiteHooks, tensor_leaves
from geffect.effects.rules import Rule, rule_for
from geffect.effects.runtime import forward_logits, measuring, model_device


@dataclass
class PairwiseResult:
    """``values[j, i, k] = <∇_{θ_k} ℓ_j, ∇_{θ_k} R_i>`` (float64, CPU, B_f × B_p × K) for columns ``groups``."""

    values: torch.Tensor
    groups: list[str]
    layers: list[str] = field(default_factory=list)
    granularity: str = "layer"

    def to_frame(self) -> pd.DataFrame:
        """Long table with columns ``forget``, ``instance``, ``layer`` (+ ``module``), ``value``."""
        forget, probe, width = self.values.shape
        grid = torch.arange(forget * probe * width)
        frame = pd.DataFrame({
            "forget": (grid // (probe * width)).numpy(),
            "instance": (grid // width % probe).numpy(),
            "layer": (self.layers or self.groups) * (forget * probe),
            "value": self.values.reshape(-1).numpy(),
        })
        if self.granularity == "module":
            frame.insert(3, "module", self.groups * (forget * probe))
        return frame


def _single_output(site: Site, output) -> torch.Tensor | None:
    outputs = [t for t in tensor_leaves(output) if t.requires_grad]
    if len(outputs) > 1:
        raise RuntimeError(f"pairwise effects need modules with one differentiable output; "
                           f"{site.path!r} ({type(site.module).__name__}) has {len(outputs)}")
    return outputs[0] if outputs else None


def _is_root(args: tuple, kwargs: dict) -> bool:
    return not any(t.requires_grad for t in tensor_leaves((args, kwargs)))


class _Record:
    """Forget side: keep each module call's inputs and output gradient."""

    def __init__(self, rules: list[Rule]):
        self.rules = rules
        self.roots: list[torch.Tensor] = []
        self.calls: dict[int, list[tuple[dict, dict]]] = {}

    def __call__(self, site: Site, args: tuple, kwargs: dict, output) -> None:
        out = _single_output(site, output)
        if out is None:
            return None
        if _is_root(args, kwargs):
            self.roots.append(out)
        entry = ({"cap": self.rules[site.index].capture(site.module, args, kwargs)}, {})
        self.calls.setdefault(site.index, []).append(entry)
        out.register_hook(partial(self._keep, entry[1]))
        return None

    @staticmethod
    def _keep(slot: dict, grad: torch.Tensor) -> None:
        slot["grad"] = grad.detach()


class _Contract:
    """Probe side: contract each module's probe factors with the recorded forget factors."""

    def __init__(self, sites: list[Site], rules: list[Rule], record: _Record, columns: list[int],
                 forget_size: int, size: int, width: int, device: torch.device):
        self.sites, self.rules, self.record, self.columns = sites, rules, record, columns
        self.values = torch.zeros(forget_size, size, width, dtype=torch.float64, device=device)
        self.roots: list[torch.Tensor] = []

    def __call__(self, site: Site, args: tuple, kwargs: dict, output) -> None:
        out = _single_output(site, output)
        if out is None:
            return None
        if _is_root(args, kwargs):
            self.roots.append(out)
        forget = [(e["cap"], g["grad"]) for e, g in self.record.calls.get(site.index, []) if "grad" in g]
        if forget:
            cap = self.rules[site.index].capture(site.module, args, kwargs)
            out.register_hook(partial(self._contract, site, cap, forget))
        return None

    def _contract(self, site: Site, cap: dict, forget: list, grad: torch.Tensor) -> None:
        rule, names = self.rules[site.index], list(site.params)
        for cap_f, grad_f in forget:
            if grad_f.shape[0] != self.values.shape[0]:
                raise RuntimeError(f"module {site.path!r} saw a forget batch of {grad_f.shape[0]} rows, "
                                   f"expected {self.values.shape[0]} (one per forget instance)")
            self.values[:, :, self.columns[site.index]] += rule.pair(site.module, cap_f, grad_f, cap, grad, names)
        return None


def _row_positions(module: nn.Module, args: tuple, kwargs: dict):
    """Pre-hook giving the model explicit per-row ``position_ids`` (the default ``arange`` values).

    Without them, learned position embeddings (GPT-2's ``wpe``) see one broadcast row for the
    whole batch, and their gradient cannot be split by instance.
    """
    ids = kwargs.get("input_ids", args[0] if args else None)
    if kwargs.get("position_ids") is not None or not isinstance(ids, torch.Tensor) or ids.dim() != 2 \
            or kwargs.get("past_key_values") is not None:
        return None
    positions = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1).contiguous()
    return args, {**kwargs, "position_ids": positions}


def _per_instance(losses) -> torch.Tensor:
    losses = getattr(losses, "per_instance", losses)
    if not isinstance(losses, torch.Tensor) or losses.dim() != 1:
        raise TypeError("loss_fn(model, batch) must return a 1-D tensor of per-forget-instance losses "
                        "(or an object with such a .per_instance)")
    return losses


def pairwise_effect(model: nn.Module, loss_fn: Callable, forget_batch: Mapping, probe_batch: Mapping,
                    granularity: str = "layer", reduction: str = "instance",
                    chunk_size: int | None = None) -> PairwiseResult:
    """Matrix ``<∇ℓ_j, ∇R_i>`` per layer group between forget instances ``j`` and probe instances ``i``.

    ``loss_fn(model, forget_batch)`` returns the per-forget-instance losses ``ℓ`` (shape ``B_f``;
    an ``ObjectiveOutput`` with ``per_instance`` works too); row ``j`` of every module call it makes
    must belong to forget instance ``j``. Probe risks ``R_i`` use ``reduction`` as in ``EffectProbe``.
    ``chunk_size`` splits the probe batch.
    """
    check_granularity(granularity)
    sites = find_sites(model)
    experts = [site.path for site in sites if site.parts]
    if experts:
        raise NotImplementedError(f"pairwise effects need every module's rows to be forget instances; the "
                                  f"mixture-of-experts layers {experts[:2]} work on tokens (use EffectProbe or "
                                  "gradient_effect for per-instance effects)")
    rules = [rule_for(site.module, site.path) for site in sites]
    groups = ordered_columns(sites, granularity)
    index = {name: k for k, name in enumerate(groups)}
    columns = [index[site.column(granularity)] for site in sites]
    layer_of = {site.column(granularity): site.group for site in sites}
    device = model_device(model)
    probe = prepare_batch(probe_batch, reduction, vocabulary_size(model)).to(device)
    hooks = SiteHooks(sites)
    try:
        with measuring(model), torch.enable_grad():
            record = _Record(rules)
            positions = model.register_forward_pre_hook(_row_positions, with_kwargs=True)
            try:
                with hooks.active(record):
                    losses = _per_instance(loss_fn(model, forget_batch))
            finally:
                positions.remove()
            if not record.roots:
                raise RuntimeError("no trainable parameter took part in loss_fn's forward pass")
            torch.autograd.grad(losses.sum(), record.roots, allow_unused=True)
            blocks = []
            chunks = list(probe.chunks(chunk_size))
            for _, chunk in tqdm(chunks, desc="pairwise effects", leave=False, disable=len(chunks) < 2):
                session = _Contract(sites, rules, record, columns, losses.shape[0], chunk.size, len(groups),
                                    device)
                with hooks.active(session):
                    nll = target_nll(forward_logits(model, chunk), chunk)
                    total = (nll * chunk.weights.to(nll.dtype)).sum()
                    torch.autograd.grad(total, session.roots, allow_unused=True)
                blocks.append(session.values.cpu())
    finally:
        hooks.close()
    return PairwiseResult(values=torch.cat(blocks, dim=1), groups=groups, layers=[layer_of[g] for g in groups],
                          granularity=granularity)
