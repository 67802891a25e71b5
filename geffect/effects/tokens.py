"""Per-token effects ``<∇ℓ_{i,τ}, v>``: how a direction moves the NLL of each label token.

Forward-mode differentiation with the same local rules as the reverse engine: during one forward
pass under ``torch.autograd.forward_ad``, every module owning parameters adds its local output
tangent ``δu`` (its parameters moved along ``v``, inputs fixed) to the tangent flowing out of it.
The tangent arriving at the token NLLs is then the sum over modules of their contributions, i.e.
``<∇ℓ_{i,τ}, v>`` exactly, for all tokens at once. Per layer group (or module), one such pass is
run with only that group's modules injecting tangents; tied weights split by use as elsewhere.
The attention must support forward-mode AD: Hugging Face models are switched to
``attn_implementation="eager"`` for the measurement (same function) and switched back.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import pandas as pd
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from tqdm.auto import tqdm

from geffect.effects.batch import ProbeBatch, prepare_batch, target_nll, vocabulary_size
from geffect.effects.direction import Direction, resolve_direction, site_directions
from geffect.effects.experts import expert_slice
from geffect.effects.groups import Site, check_granularity, find_sites, ordered_columns
from geffect.effects.hooks import SiteHooks
from geffect.effects.rules import Rule, rule_for
from geffect.effects.runtime import forward_logits, measuring, model_device


def _primal(obj):
    if isinstance(obj, torch.Tensor):
        return fwAD.unpack_dual(obj).primal
    if isinstance(obj, tuple):
        return tuple(_primal(o) for o in obj)
    if isinstance(obj, list):
        return [_primal(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _primal(o) for k, o in obj.items()}
    return obj


def _inject(output, delta):
    """``output`` with ``delta`` added to its forward-mode tangent."""
    if isinstance(output, torch.Tensor):
        primal, tangent = fwAD.unpack_dual(output)
        if not primal.is_floating_point():  # e.g. a router's expert indices
            return output
        return fwAD.make_dual(primal, delta if tangent is None else tangent + delta)
    if isinstance(output, (tuple, list)) and isinstance(delta, (tuple, list)):
        return type(output)(_inject(o, d) if isinstance(o, torch.Tensor) else o for o, d in zip(output, delta))
    raise TypeError(f"cannot add a tangent to a module output of type {type(output).__name__}")


class _Tangents:
    """Handler adding the local tangents of the ``active`` sites (site -> expert part or None) to their outputs."""

    def __init__(self, rules: list[Rule], directions: list, active: dict[int, int | None]):
        self.rules, self.directions, self.active = rules, directions, active

    def __call__(self, site: Site, args: tuple, kwargs: dict, output):
        v = self.directions[site.index]
        if v is None or site.index not in self.active:
            return None
        v = expert_slice(v, self.active[site.index])
        rule = self.rules[site.index]
        cap = rule.capture(site.module, _primal(args), _primal(kwargs))
        return _inject(output, rule.tangent(site.module, cap, v, in_dual_level=True))


@contextmanager
def _eager(model: nn.Module, what: str) -> Iterator[None]:
    """Switch a Hugging Face model's ``what`` ("attn" or "experts") implementation to eager for the duration."""
    config = getattr(model, "config", None)
    current = getattr(config, f"_{what}_implementation", None)
    setter = getattr(model, f"set_{what}_implementation", None)
    if current in (None, "eager") or setter is None:
        yield
        return
    setter("eager")
    try:
        yield
    finally:
        setter(current)


@contextmanager
def _eager_attention(model: nn.Module) -> Iterator[None]:
    """Eager attention and experts (forward-mode AD capable; the same function) for the duration."""
    with _eager(model, "attn"), _eager(model, "experts"):
        yield


def _pass(model: nn.Module, hooks: SiteHooks, handler: _Tangents, chunk: ProbeBatch):
    with fwAD.dual_level(), hooks.active(handler):
        try:
            nll = target_nll(forward_logits(model, chunk), chunk)
        except (NotImplementedError, RuntimeError) as error:
            if "forward" not in str(error).lower():
                raise
            raise RuntimeError(
                "per-token effects need forward-mode AD through every operation of the model "
                f"(eager attention is used automatically for Hugging Face models); this failed: {error}") from error
        primal, tangent = fwAD.unpack_dual(nll)
        return primal.detach(), (torch.zeros_like(primal) if tangent is None else tangent)


def token_effect(model: nn.Module, direction: Direction, batch: Mapping, granularity: str | None = None,
                 chunk_size: int | None = None, dtype: torch.dtype | None = None) -> pd.DataFrame:
    """Effect of ``direction`` on each label token's NLL: ``<∇ℓ_{i,τ}, v>``.

    Returns a long DataFrame with columns ``instance``, ``token`` (position of the label token in
    ``input_ids``), ``token_id``, ``nll`` (the token's NLL), ``value``; with ``granularity``
    (``"layer"`` or ``"module"``) one row per token and group, with a ``layer`` (+ ``module``)
    column, at the cost of one forward pass per group. ``dtype``: measure in that precision
    (see ``EffectProbe``).
    """
    if granularity is not None:
        check_granularity(granularity)
    sites = find_sites(model)
    rules = [rule_for(site.module, site.path) for site in sites]
    directions = site_directions(sites, resolve_direction(model, direction))
    columns = ordered_columns(sites, granularity) if granularity else [None]
    members: dict[str | None, dict[int, int | None]] = {c: {} for c in columns}
    for s in sites:
        if granularity is None:
            members[None][s.index] = None
            continue
        for column, part in zip(s.columns(granularity), s.part_slices(granularity)):
            members[column][s.index] = part
    layer_of = {c: s.group for s in sites for c in s.columns(granularity)} if granularity else {}
    probe = prepare_batch(batch, vocab_size=vocabulary_size(model)).to(model_device(model))
    hooks = SiteHooks(sites)
    frames = []
    try:
        with measuring(model, dtype), _eager_attention(model), torch.no_grad():
            work = [(start, chunk, c) for start, chunk in probe.chunks(chunk_size) for c in columns]
            for start, chunk, column in tqdm(work, desc="token effects", leave=False, disable=len(work) < 2):
                nll, tangent = _pass(model, hooks, _Tangents(rules, directions, members[column]), chunk)
                frame = pd.DataFrame({
                    "instance": (chunk.rows + start).cpu().numpy(),
                    "token": chunk.positions.cpu().numpy(),
                    "token_id": chunk.target_ids.cpu().numpy(),
                    "nll": nll.double().cpu().numpy(),
                    "value": tangent.double().cpu().numpy(),
                })
                if column is not None:
                    frame["_rank"] = columns.index(column)
                    frame.insert(2, "layer", layer_of[column])
                    if granularity == "module":
                        frame.insert(3, "module", column)
                frames.append(frame)
    finally:
        hooks.close()
    frame = pd.concat(frames, ignore_index=True)
    order = frame["_rank"] if "_rank" in frame else 0
    frame = frame.assign(_rank=order).sort_values(["instance", "token", "_rank"], kind="stable")
    return frame.drop(columns="_rank").reset_index(drop=True)
