"""Fused mixture-of-experts layers: exact contractions split per token and per expert.

Hugging Face's ``*Experts`` modules (Mixtral, Qwen2/3-MoE, OLMoE, DeepSeek-V2/V3, gpt-oss, ...)
stack one slice per expert along dim 0 of each parameter and are called as
``experts(x, top_k_index, top_k_weights)`` on the batch's tokens flattened to rows (``N = B·T``):
``u_t = Σ_k w_{t,k} f_{e_{t,k}}(x_t)``, where expert ``e`` uses only slice ``e``. The routing
(indices and weights) is an input of the module: its dependence on the parameters is the router's
own site. So with inputs fixed the output tangent along ``v`` is ``δu_t = Σ_k w_{t,k} ∂f_e(x_t)·v_e``
and token ``t``'s contribution ``<g_t, δu_t>`` splits exactly into one term per routed expert.

All those terms come from one forward-mode pass of the module's reference (eager) forward on the
(token, expert) *pairs* laid out as rows, each routed to its one expert with its weight: row ``s``
then evaluates ``w_s f_{e_s}(x_{t_s})``, whose tangent contracted with ``g_{t_s}`` is pair ``s``'s
term. That the pair rows sum to the module's output is checked once per module, on its first call;
a module that fails the check (or is called another way) gets its per-expert terms from one
forward-mode pass per expert, with the direction restricted to that expert's slice. The reference
forward is used because the fused kernels (``grouped_mm``) lack forward-mode derivatives and
float64 support on CPU; it computes the same function.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.func import functional_call

from geffect.effects.hooks import suspended, tensor_leaves
from geffect.effects.rules import GenericRule, _check_version, _replay, _tangents_of, rowdot

ROUTING = ("hidden_states", "top_k_index", "top_k_weights")


@contextmanager
def reference_forward(module: nn.Module) -> Iterator[None]:
    """Run ``module`` with the forward its class defines, not a kernel swapped in by a decorator."""
    forward = type(module).forward
    original = getattr(forward, "__wrapped__", None)
    if original is None or "forward" in vars(module):
        yield
        return
    module.forward = types.MethodType(original, module)
    try:
        yield
    finally:
        del module.forward


def expert_slice(v: dict[str, torch.Tensor], part: int | None) -> dict[str, torch.Tensor]:
    """The direction restricted to expert ``part`` (dim-0 slice ``part`` of every tensor; None: all)."""
    if part is None:
        return v
    out = {}
    for name, tensor in v.items():
        keep = torch.zeros(tensor.shape[0], *([1] * (tensor.dim() - 1)), dtype=tensor.dtype, device=tensor.device)
        keep[part] = 1
        out[name] = tensor * keep
    return out


def _routing(cap: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(x, top_k_index, top_k_weights)`` of a call in the experts form, else None."""
    args, kwargs = cap["args"], cap["kwargs"]
    values = list(args) + [kwargs[k] for k in ROUTING[len(args):] if k in kwargs]
    if len(values) != 3 or len(args) + len(kwargs) != 3 or not all(isinstance(v, torch.Tensor) for v in values):
        return None
    x, index, weights = values
    if x.dim() != 2 or index.dim() != 2 or index.is_floating_point() or weights.shape != index.shape \
            or index.shape[0] != x.shape[0]:
        return None
    return x, index, weights


def _pair_rows(x: torch.Tensor, index: torch.Tensor, weights: torch.Tensor):
    """Each (token, routed expert) pair as a row routed to that expert alone: (token of each row, inputs)."""
    rows, k = index.shape
    token = torch.arange(rows, device=x.device).repeat_interleave(k)
    return token, (x[token], index.reshape(-1, 1), weights.reshape(-1, 1))


class ExpertsRule(GenericRule):
    """Fused experts with ``count`` experts: per-token, per-expert effects (see the module docstring)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.additive: bool | None = None  # do pair rows sum to the output? None: not checked yet

    def tangent(self, module, cap, v, in_dual_level=False):
        with reference_forward(module):
            return super().tangent(module, cap, v, in_dual_level)

    def _check(self, module: nn.Module, cap: dict) -> bool:
        """Whether pair rows reproduce this module's output (checked once, on the captured call)."""
        if self.additive is None:
            routing = _routing(cap)
            self.additive = False
            if routing is not None:
                x, index, weights = routing
                token, pairs = _pair_rows(x, index, weights)
                with suspended(), _replay(cap), torch.no_grad(), reference_forward(module):
                    whole = module(x, index, weights)
                    split = module(*pairs)
                if isinstance(whole, torch.Tensor) and isinstance(split, torch.Tensor) \
                        and split.shape == (token.numel(), *whole.shape[1:]):
                    summed = torch.zeros_like(whole).index_add_(0, token, split)
                    tol = 16 * torch.finfo(whole.dtype).eps * float(whole.abs().max().clamp(min=1))
                    self.additive = bool(torch.allclose(summed, whole, rtol=tol, atol=tol))
        return self.additive

    def _pairs(self, module: nn.Module, cap: dict, g: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        """(rows, experts) float64: each token row's term per expert, from one pass over pair rows."""
        x, index, weights = _routing(cap)
        token, pairs = _pair_rows(x, index, weights)
        own = dict(module.named_parameters(recurse=False))
        with suspended(), _replay(cap), torch.no_grad(), fwAD.dual_level(), reference_forward(module):
            params = {n: fwAD.make_dual(own[n].detach(), t.to(own[n].dtype)) for n, t in v.items()}
            tangent = _tangents_of(functional_call(module, params, pairs))
        terms = rowdot(g.reshape(x.shape[0], -1)[token], tangent)
        expert = index.reshape(-1)
        valid = (expert >= 0) & (expert < self.count)  # expert-parallel "no expert" sentinels drop out
        out = torch.zeros(x.shape[0], self.count, dtype=torch.float64, device=g.device)
        return out.index_put_((token[valid], expert[valid]), terms[valid], accumulate=True)

    def _per_expert(self, module: nn.Module, cap: dict, g: torch.Tensor, v: dict[str, torch.Tensor],
                    index: int) -> torch.Tensor:
        """(rows, experts) float64 by one forward-mode pass per expert (any call form)."""
        return torch.stack([rowdot(g, tensor_leaves(self.tangent(module, cap, expert_slice(v, e)))[index])
                            for e in range(self.count)], 1)

    def contract_many(self, module, caps, g, vs, index=0):
        _check_version(caps[0], type(module).__name__)
        fits = index == 0 and self._check(module, caps[0])
        return [None if v is None else
                (self._pairs(module, cap, g, v) if fits else self._per_expert(module, cap, g, v, index))
                for cap, v in zip(caps, vs)]

    def contract(self, module, cap, g, v, index=0):
        return self.contract_many(module, [cap], g, [v], index)[0]

    def instance_grads(self, module, cap, g, names):
        raise NotImplementedError("per-instance gradients of fused experts are not supported (rows are tokens)")
