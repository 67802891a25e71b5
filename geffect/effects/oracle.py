"""Brute-force reference implementation of every engine output, for tests and benchmarks.

Deliberately naive and independent of the engine's machinery: each instance is run *alone*,
without its padding (its real tokens only, with their original ``position_ids``), its risk is
the Hugging Face-style mean cross-entropy of its labels, and one ``torch.autograd.grad`` call
returns full parameter gradients, which are dotted with the direction. To split a tied weight's
gradient by use (GPT-2's ``wte`` = ``lm_head``) the oracle works on a deep copy of the model in
which every use owns a separate, identical copy of the tensor; the copy computes the same
function, and the gradient of each copy is exactly that use's share.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from geffect.effects.direction import Direction, resolve_direction
from geffect.effects.groups import find_sites, ordered_columns
from geffect.effects.probe import EffectResult
from geffect.schema import IGNORE_INDEX


class _Untied:
    """A deep copy of ``model`` whose shared parameters are split per using module.

    ``entries`` lists (column, original name, index in ``params``, part): ``part`` is the expert index for a
    fused-experts column at module granularity (the slice ``tensor[part]``), else None.
    """

    def __init__(self, model: nn.Module, granularity: str):
        self.model = copy.deepcopy(model).eval()
        sites = find_sites(self.model)  # computed before untying: original parameter names
        self.columns = ordered_columns(sites, granularity)
        layer_of = {column: site.group for site in sites for column in site.columns(granularity)}
        self.layers = [layer_of[column] for column in self.columns]
        seen: set[int] = set()
        self.params: list[nn.Parameter] = []
        self.entries: list[tuple[int, str, int, int | None]] = []  # (column, name, index in params, part)
        for site in sites:
            for local, name in site.params.items():
                param = getattr(site.module, local)
                if id(param) in seen:
                    param = nn.Parameter(param.detach().clone())
                    setattr(site.module, local, param)
                seen.add(id(param))
                self.params.append(param)
                for column, part in zip(site.columns(granularity), site.part_slices(granularity)):
                    self.entries.append((self.columns.index(column), name, len(self.params) - 1, part))

    def grads(self, loss: torch.Tensor, retain_graph: bool = False) -> list[torch.Tensor]:
        found = torch.autograd.grad(loss, self.params, allow_unused=True, retain_graph=retain_graph)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(found, self.params)]

    def directions(self, resolved: Mapping[str, torch.Tensor]) -> list[torch.Tensor | None]:
        """Per parameter copy, the direction of its original parameter (None: not in the direction)."""
        names = {index: name for _, name, index, _ in self.entries}
        return [resolved.get(names[index]) for index in range(len(self.params))]

    def dots(self, grads: list[torch.Tensor], other: list[torch.Tensor | None]) -> torch.Tensor:
        """Per column, the sum over its parameters (or expert slices) of <grads, other> (float64)."""
        out = torch.zeros(len(self.columns), dtype=torch.float64)
        for column, _, index, part in self.entries:
            g, o = grads[index], other[index]
            if o is None:
                continue
            if part is not None:
                g, o = g[part], o[part]
            out[column] += (g.double() * o.double().to(g.device)).sum().cpu()
        return out


def _instances(batch: Mapping):
    """Yield ``(i, input_ids, position_ids, labels)`` of each instance without its padding."""
    input_ids = torch.as_tensor(batch["input_ids"])
    labels = torch.as_tensor(batch["labels"])
    mask = torch.as_tensor(batch["attention_mask"]).bool() if batch.get("attention_mask") is not None \
        else torch.ones_like(input_ids, dtype=torch.bool)
    positions = torch.as_tensor(batch["position_ids"]).expand_as(input_ids) if batch.get("position_ids") \
        is not None else torch.arange(input_ids.shape[1]).expand_as(input_ids)
    for i in range(input_ids.shape[0]):
        keep = mask[i].nonzero().flatten()
        lab = labels[i, keep].clone()
        # A label counts only if the token before it (which predicts it) is real and adjacent.
        adjacent = torch.ones_like(keep, dtype=torch.bool)
        adjacent[1:] = keep[1:] - keep[:-1] == 1
        lab[~adjacent] = IGNORE_INDEX
        yield i, input_ids[i, keep], positions[i, keep], lab, keep


def _token_nll(model: nn.Module, ids: torch.Tensor, pos: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    logits = model(input_ids=ids[None].to(device), attention_mask=torch.ones_like(ids)[None].to(device),
                   position_ids=pos[None].to(device), use_cache=False).logits[0]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits[:-1], lab[1:].to(device), ignore_index=IGNORE_INDEX, reduction="none")


def _risk_scale(batch: Mapping, reduction: str) -> float | None:
    """``B/N`` for the token reduction (None for the instance mean)."""
    if reduction == "instance":
        return None
    counts = [int((lab[1:] != IGNORE_INDEX).sum()) for _, _, _, lab, _ in _instances(batch)]
    return len(counts) / sum(counts)


def _risk(nll: torch.Tensor, lab: torch.Tensor, scale: float | None) -> torch.Tensor:
    valid = (lab[1:] != IGNORE_INDEX).to(nll.device)
    return nll[valid].mean() if scale is None else nll[valid].sum() * scale


def oracle_effects(model: nn.Module, direction: Direction, batch: Mapping, granularity: str = "layer",
                   reduction: str = "instance") -> EffectResult:
    """Effects by one backward per instance and full gradients (reference for ``EffectProbe``)."""
    resolved = resolve_direction(model, direction)
    untied = _Untied(model, granularity)
    v = untied.directions(resolved)
    scale = _risk_scale(batch, reduction)
    rows, risks = [], []
    with torch.enable_grad():
        for _, ids, pos, lab, _ in _instances(batch):
            risk = _risk(_token_nll(untied.model, ids, pos, lab), lab, scale)
            rows.append(untied.dots(untied.grads(risk), v))
            risks.append(float(risk.detach()))
    return EffectResult(values=torch.stack(rows), groups=untied.columns,
                        risks=torch.tensor(risks, dtype=torch.float64), layers=untied.layers,
                        granularity=granularity,
                        reduction=reduction)


def oracle_token_effects(model: nn.Module, direction: Direction, batch: Mapping,
                         granularity: str = "layer") -> pd.DataFrame:
    """Per label token ``<∇ℓ_{i,τ}, v>`` per column: columns instance, token, layer, value."""
    resolved = resolve_direction(model, direction)
    untied = _Untied(model, granularity)
    v = untied.directions(resolved)
    records = []
    with torch.enable_grad():
        for i, ids, pos, lab, keep in _instances(batch):
            nll = _token_nll(untied.model, ids, pos, lab)
            for k in (lab[1:] != IGNORE_INDEX).nonzero().flatten().tolist():
                dots = untied.dots(untied.grads(nll[k], retain_graph=True), v)
                token = int(keep[k + 1])
                records += [(i, token, column, float(d)) for column, d in zip(untied.columns, dots)]
    return pd.DataFrame(records, columns=["instance", "token", "layer", "value"])


def oracle_pairwise(model: nn.Module, loss_fn: Callable, forget_batch: Mapping, probe_batch: Mapping,
                    granularity: str = "layer", reduction: str = "instance") -> torch.Tensor:
    """``<∇ℓ_j, ∇R_i>`` per column, float64 (B_f, B_p, K), from stored per-instance full gradients."""
    untied = _Untied(model, granularity)
    with torch.enable_grad():
        forget = []
        losses = loss_fn(untied.model, forget_batch)
        losses = getattr(losses, "per_instance", losses)
        for j in range(losses.shape[0]):
            per_instance = loss_fn(untied.model, forget_batch)
            forget.append(untied.grads(getattr(per_instance, "per_instance", per_instance)[j]))
        scale = _risk_scale(probe_batch, reduction)
        probe = []
        for _, ids, pos, lab, _ in _instances(probe_batch):
            probe.append(untied.grads(_risk(_token_nll(untied.model, ids, pos, lab), lab, scale)))
    out = torch.zeros(len(forget), len(probe), len(untied.columns), dtype=torch.float64)
    for j, gf in enumerate(forget):
        for i, gp in enumerate(probe):
            out[j, i] = untied.dots(gf, gp)
    return out
