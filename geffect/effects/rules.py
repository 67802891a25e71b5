"""Local rules: how a module's own parameters move its output, and the per-instance contractions.

For a module ``u = f(x; θ_m)`` inside the network, with ``g = ∂(Σ_i R_i)/∂u`` (instance ``i``'s
risk depends only on batch row ``i``), the directional derivative of ``R_i`` along ``v`` restricted
to ``θ_m`` is ``Σ_t <g_{i,t}, δu_{i,t}>`` where ``δu = ∂f/∂θ_m · v_m`` is the output tangent with
the inputs held fixed. Rules compute ``δu`` and that contraction from the module's saved inputs:

- ``nn.Linear``: ``δu = x Vᵀ + v_b``; contracted as ``Σ_t g_tᵀ V x_t`` (multiplying ``V`` by the
  smaller of ``g`` and ``x``), plus ``(Σ_t g_t)·v_b``;
- GPT-2 ``Conv1D`` (``u = x W + b``): the same with ``V`` transposed;
- ``nn.Embedding``: ``δu_t = V[token_t]`` (zero at ``padding_idx``, whose gradient is zero);
- ``nn.LayerNorm``: ``δu = n(x) ⊙ v_w + v_b`` with ``n`` the normalisation;
- RMSNorm variants (``u = w ⊙ n(x)`` as in Llama, or ``(1 + w) ⊙ n(x)`` as in Gemma):
  ``δu = v_w ⊙ n(x)``, after checking once per module, against its own forward at random
  weights, which form and precision recipe it follows;
- anything else (and an RMSNorm that fits no known form): an exact generic fallback, the
  Jacobian-vector product of ``torch.func.functional_call(module, params, inputs)`` with respect
  to its params (forward-mode AD with dual parameters).

Several directions at once (``contract_many``): a Linear layer whose per-instance weight
gradients ``G_i = Σ_t g_{i,t} x_{i,t}ᵀ`` are small next to its activations forms them once
(one batched matmul) and takes one inner product per direction; otherwise it multiplies by all
directions' weights side by side in one matrix product (``g [V_1 … V_D]``), then one row-wise
inner product per direction. Half-precision activations are contracted in float32.

Pairwise effects ``<∇ℓ_j, ∇R_i>`` need, per module, the inner product of two per-instance weight
gradients ``G_j = Σ_t g_{j,t} x_{j,t}ᵀ``. Linear layers pick the cheaper exact route: the Gram
identity ``Σ_{t,s} (g_{jt}·g_{is})(x_{jt}·x_{is})`` (cost ∝ T²) or materialising ``G`` in row
slices (cost ∝ d_in·d_out); embeddings accumulate gradient rows of tokens present on both sides;
other modules materialise per-instance gradients with ``torch.func`` (vmap of a VJP).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vjp, vmap

from geffect.effects.hooks import suspended, tensor_leaves

try:  # GPT-2 style ``u = x W + b`` layer
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a hard dependency
    Conv1D = None

# Largest temporary (in elements) a pairwise contraction may allocate at once.
PAIR_BUDGET = 1 << 25
# Linear-layer pairwise route: "auto" (cheaper by flop count), "gram" or "dense" (for tests).
PAIR_ROUTE = "auto"
# A Linear layer forms per-instance weight gradients (B x d_out x d_in) when they have at most
# MANY_FACTOR times the elements of its input and output gradient together, so memory stays in
# proportion to a normal backward (and the batched product pays off).
MANY_FACTOR = 4


class NoRuleError(RuntimeError):
    """A trainable parameter is used in a way no exact rule covers."""


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _wide(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 stays, everything else is summed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row inner product of two tensors shaped (B, ...), as float64 (B,).

    A batched matrix product, so the elementwise product is never materialised.
    """
    dtype = _wide(torch.promote_types(a.dtype, b.dtype))
    rows = a.shape[0]
    return torch.bmm(a.reshape(rows, 1, -1).to(dtype), b.reshape(rows, -1, 1).to(dtype)).reshape(rows).double()


def _check_version(cap: dict, where: str) -> None:
    for tensor, version in cap.get("_versions", ()):
        if tensor._version != version:
            raise RuntimeError(f"the input of {where} was modified in place after the forward pass; "
                               "geffect cannot contract it exactly")


def _remember(cap: dict, *tensors: torch.Tensor) -> dict:
    cap["_versions"] = [(t, t._version) for t in tensors if isinstance(t, torch.Tensor)]
    return cap


def _autocast_state(device_type: str) -> tuple[str, torch.dtype] | None:
    if torch.is_autocast_enabled(device_type):
        return device_type, torch.get_autocast_dtype(device_type)
    return None


def _replay(cap: dict):
    state = cap.get("autocast")
    if state is None:
        return torch.autocast("cpu", enabled=False)
    return torch.autocast(state[0], dtype=state[1])


class Rule:
    """Interface of a local rule (see the module docstring)."""

    def capture(self, module: nn.Module, args: tuple, kwargs: dict) -> dict:
        raise NotImplementedError

    def tangent(self, module: nn.Module, cap: dict, v: dict[str, torch.Tensor], in_dual_level: bool = False) -> Any:
        """Output tangent ``δu`` (same structure as the module output).

        ``in_dual_level``: called inside an active ``torch.autograd.forward_ad.dual_level``.
        """
        raise NotImplementedError

    def contract(self, module: nn.Module, cap: dict, g: torch.Tensor, v: dict[str, torch.Tensor],
                 index: int = 0) -> torch.Tensor:
        """``Σ_t <g_{i,t}, δu_{i,t}>`` per batch row, float64 (B,); ``index``: which output tensor."""
        if "tangents" not in cap:
            cap["tangents"] = tensor_leaves(self.tangent(module, cap, v))
        return rowdot(g, cap["tangents"][index])

    def contract_many(self, module: nn.Module, caps: list[dict], g: torch.Tensor,
                      vs: list[dict[str, torch.Tensor] | None], index: int = 0) -> list[torch.Tensor | None]:
        """``contract`` for several directions (``None`` where a direction misses this module).

        ``caps[d]`` is direction ``d``'s own shallow copy of one capture (tangent caches differ).
        """
        return [None if v is None else self.contract(module, cap, g, v, index) for cap, v in zip(caps, vs)]

    def instance_grads(self, module: nn.Module, cap: dict, g: torch.Tensor,
                       names: list[str]) -> dict[str, torch.Tensor]:
        """Per-instance gradients ``(B, *param.shape)`` of ``Σ_t <g_t, u_t>`` w.r.t. the named params."""
        return _generic_instance_grads(module, cap, g, names)

    def regroup(self, cap: dict, size: int) -> dict | None:
        """The capture of a call on token rows (``size·T`` rows) with rows grouped per instance
        (``size`` leading), or None if this rule cannot regroup (then effects are summed per instance)."""
        return None

    def pair(self, module: nn.Module, cap_f: dict, g_f: torch.Tensor, cap_p: dict, g_p: torch.Tensor,
             names: list[str]) -> torch.Tensor:
        """``<G^f_j, G^p_i>`` summed over the named params, float64 (B_f, B_p)."""
        left = self.instance_grads(module, cap_f, g_f, names)
        right = self.instance_grads(module, cap_p, g_p, names)
        dtype = _wide(g_f.dtype)
        return sum(_flat(left[n]).to(dtype) @ _flat(right[n]).to(dtype).T for n in names).double()


def _input(args: tuple, kwargs: dict, key: str) -> torch.Tensor:
    return args[0] if args else kwargs[key]


class LinearRule(Rule):
    """``nn.Linear`` (``transposed=False``, weight d_out×d_in) or GPT-2 ``Conv1D`` (weight d_in×d_out)."""

    def __init__(self, transposed: bool = False):
        self.transposed = transposed

    def capture(self, module, args, kwargs):
        x = _input(args, kwargs, "input" if not self.transposed else "x")
        return _remember({"x": x.detach()}, x)

    def regroup(self, cap, size):
        x = cap["x"]
        return {**cap, "x": x.reshape(size, -1, x.shape[-1])}

    def _weight(self, v: dict[str, torch.Tensor]) -> torch.Tensor | None:
        weight = v.get("weight")
        return None if weight is None else (weight.T if self.transposed else weight)  # d_out x d_in

    def tangent(self, module, cap, v, in_dual_level=False):
        x, weight, bias = cap["x"], self._weight(v), v.get("bias")
        if weight is None:
            shape = x.shape[:-1] + bias.shape
            return bias.to(x.dtype).expand(shape)
        return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))

    def contract(self, module, cap, g, v, index=0):
        _check_version(cap, type(module).__name__)
        x, weight, bias = cap["x"], self._weight(v), v.get("bias")
        total = torch.zeros(g.shape[0], dtype=torch.float64, device=g.device)
        if weight is not None:
            dtype = _wide(g.dtype)  # bf16/fp16 activations are contracted in float32
            d_out, d_in = weight.shape
            if d_in <= d_out:
                total += rowdot(g.to(dtype) @ weight.to(dtype), x)
            else:
                total += rowdot(x.to(dtype) @ weight.to(dtype).T, g)
        if bias is not None:
            summed = g.reshape(g.shape[0], -1, g.shape[-1]).sum(1, dtype=_wide(g.dtype))
            total += (summed @ bias.to(summed.dtype)).double()
        return total

    def contract_many(self, module, caps, g, vs, index=0):
        weights = [None if v is None else self._weight(v) for v in vs]
        present = [w for w in weights if w is not None]
        if not present:
            return super().contract_many(module, caps, g, vs, index)
        _check_version(caps[0], type(module).__name__)
        x = caps[0]["x"]
        size, d_in, d_out = g.shape[0], x.shape[-1], g.shape[-1]
        wide = _wide(g.dtype)  # bf16/fp16 activations are contracted in float32
        g3, x3 = g.reshape(size, -1, d_out).to(wide), x.reshape(size, -1, d_in).to(wide)
        # Per-instance gradients cost one contraction's flops, then a matrix-vector product per
        # direction: worth it while they are small next to the activations (measured on CPU).
        # Otherwise all directions' weights side by side make one matrix product.
        if size * d_in * d_out <= MANY_FACTOR * (x.numel() + g.numel()):
            # the wider side last: the batched product is then much faster on CPU (measured)
            if d_out >= d_in:
                grads = (x3.transpose(1, 2) @ g3).reshape(size, -1)  # (B, d_in, d_out)
                dots = iter([grads @ w.to(wide).T.reshape(-1) for w in present])
            else:
                grads = (g3.transpose(1, 2) @ x3).reshape(size, -1)  # (B, d_out, d_in)
                dots = iter([grads @ w.reshape(-1).to(wide) for w in present])
        elif d_in <= d_out:
            side = (g3 @ torch.cat([w.to(wide) for w in present], dim=1)).split(d_in, dim=-1)
            dots = iter([rowdot(part, x3) for part in side])
        else:
            side = (x3 @ torch.cat([w.to(wide) for w in present], dim=0).T).split(d_out, dim=-1)
            dots = iter([rowdot(part, g3) for part in side])
        summed = g3.sum(1) if any(v is not None and "bias" in v for v in vs) else None
        out: list[torch.Tensor | None] = []
        for v, weight in zip(vs, weights):
            if v is None:
                out.append(None)
                continue
            total = next(dots).double() if weight is not None else None
            if "bias" in v:
                shift = (summed @ v["bias"].to(wide)).double()
                total = shift if total is None else total + shift
            out.append(total)
        return out

    def instance_grads(self, module, cap, g, names):
        x = cap["x"].reshape(g.shape[0], -1, cap["x"].shape[-1]).to(g.dtype)
        g3 = g.reshape(g.shape[0], -1, g.shape[-1])
        grads = {}
        if "weight" in names:
            weight = g3.transpose(1, 2) @ x  # (B, d_out, d_in)
            grads["weight"] = weight.transpose(1, 2) if self.transposed else weight
        if "bias" in names:
            grads["bias"] = g3.sum(1)
        return grads

    def pair(self, module, cap_f, g_f, cap_p, g_p, names):
        dtype = _wide(g_f.dtype)
        xf = cap_f["x"].reshape(g_f.shape[0], -1, cap_f["x"].shape[-1]).to(dtype)
        xp = cap_p["x"].reshape(g_p.shape[0], -1, cap_p["x"].shape[-1]).to(dtype)
        gf = g_f.reshape(g_f.shape[0], -1, g_f.shape[-1]).to(dtype)
        gp = g_p.reshape(g_p.shape[0], -1, g_p.shape[-1]).to(dtype)
        (bf, tf, d_in), (bp, tp, d_out) = xf.shape, gp.shape
        out = torch.zeros(bf, bp, dtype=dtype, device=gf.device)
        if "weight" in names:
            gram_cost = bf * tf * bp * tp * (d_in + d_out)
            dense_cost = (bf * tf + bp * tp + bf * bp) * d_in * d_out
            gram = PAIR_ROUTE == "gram" or (PAIR_ROUTE == "auto" and gram_cost < dense_cost)
            out += _pair_gram(xf, gf, xp, gp) if gram else _pair_dense(xf, gf, xp, gp)
        if "bias" in names:
            out += gf.sum(1) @ gp.sum(1).T
        return out.double()


def _pair_gram(xf, gf, xp, gp) -> torch.Tensor:
    """``Σ_{t,s} (g_{jt}·g_{is})(x_{jt}·x_{is})`` in chunks of forget instances."""
    bf, tf, _ = xf.shape
    bp, tp, _ = xp.shape
    xp2, gp2 = xp.reshape(bp * tp, -1), gp.reshape(bp * tp, -1)
    step = max(1, PAIR_BUDGET // max(1, tf * bp * tp))
    blocks = []
    for start in range(0, bf, step):
        xs, gs = xf[start:start + step], gf[start:start + step]
        n = xs.shape[0]
        prod = (xs.reshape(n * tf, -1) @ xp2.T) * (gs.reshape(n * tf, -1) @ gp2.T)
        blocks.append(prod.view(n, tf, bp, tp).sum((1, 3)))
    return torch.cat(blocks)


def _pair_dense(xf, gf, xp, gp) -> torch.Tensor:
    """Materialise per-instance weight gradients in slices of output rows, then inner products."""
    bf, bp, d_in, d_out = xf.shape[0], xp.shape[0], xf.shape[-1], gf.shape[-1]
    step = max(1, PAIR_BUDGET // max(1, (bf + bp) * d_in))
    out = torch.zeros(bf, bp, dtype=xf.dtype, device=xf.device)
    for start in range(0, d_out, step):
        rows = slice(start, start + step)
        left = gf[:, :, rows].transpose(1, 2) @ xf
        right = gp[:, :, rows].transpose(1, 2) @ xp
        out += _flat(left) @ _flat(right).T
    return out


class EmbeddingRule(Rule):
    """``nn.Embedding`` without ``max_norm`` / ``scale_grad_by_freq``."""

    def capture(self, module, args, kwargs):
        ids = _input(args, kwargs, "input")
        return _remember({"ids": ids}, ids)

    def tangent(self, module, cap, v, in_dual_level=False):
        ids = cap["ids"]
        rows = F.embedding(ids, v["weight"])
        if module.padding_idx is not None:
            rows = rows.masked_fill((ids == module.padding_idx).unsqueeze(-1), 0)
        return rows

    def contract(self, module, cap, g, v, index=0):
        _check_version(cap, type(module).__name__)
        if "weight" not in v:
            return torch.zeros(g.shape[0], dtype=torch.float64, device=g.device)
        return rowdot(g, self.tangent(module, cap, v))

    def _keep(self, module, ids):
        return ids != module.padding_idx if module.padding_idx is not None else torch.ones_like(ids, dtype=torch.bool)

    def pair(self, module, cap_f, g_f, cap_p, g_p, names):
        dtype = _wide(g_f.dtype)
        ids_f, ids_p = cap_f["ids"].reshape(g_f.shape[0], -1), cap_p["ids"].reshape(g_p.shape[0], -1)
        gf = g_f.reshape(*ids_f.shape, -1).to(dtype)
        gp = g_p.reshape(*ids_p.shape, -1).to(dtype)
        keep_f, keep_p = self._keep(module, ids_f), self._keep(module, ids_p)
        both, counts = torch.cat([ids_f[keep_f].unique(), ids_p[keep_p].unique()]).unique(return_counts=True)
        common = both[counts == 2]  # sorted tokens present on both sides
        out = torch.zeros(ids_f.shape[0], ids_p.shape[0], dtype=dtype, device=gf.device)
        if common.numel() == 0:
            return out.double()
        dim = gf.shape[-1]
        step = max(1, PAIR_BUDGET // max(1, (ids_f.shape[0] + ids_p.shape[0]) * dim))
        for start in range(0, common.numel(), step):
            tokens = common[start:start + step]
            out += _flat(_token_rows(ids_f, keep_f, gf, tokens)) @ _flat(_token_rows(ids_p, keep_p, gp, tokens)).T
        return out.double()


def _token_rows(ids: torch.Tensor, keep: torch.Tensor, g: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-instance embedding-gradient rows for ``tokens``: (B, len(tokens), d)."""
    batch, dim, count = ids.shape[0], g.shape[-1], tokens.numel()
    pos = torch.searchsorted(tokens, ids).clamp(max=count - 1)
    hit = keep & (tokens[pos] == ids)
    rows = torch.zeros(batch * count, dim, dtype=g.dtype, device=g.device)
    owner = torch.arange(batch, device=ids.device).unsqueeze(1).expand_as(ids)
    rows.index_add_(0, (owner * count + pos)[hit], g[hit])
    return rows.view(batch, count, dim)


class LayerNormRule(Rule):
    """``nn.LayerNorm``: ``u = n(x) ⊙ w + b``, so ``δu = n(x) ⊙ v_w + v_b``."""

    def capture(self, module, args, kwargs):
        x = _input(args, kwargs, "input")
        return _remember({"x": x.detach()}, x)

    def tangent(self, module, cap, v, in_dual_level=False):
        _check_version(cap, type(module).__name__)
        x = cap["x"]
        out = torch.zeros((), dtype=x.dtype, device=x.device)
        if "weight" in v:
            normed = F.layer_norm(x, module.normalized_shape, eps=module.eps)
            out = normed * v["weight"].to(normed.dtype)
        if "bias" in v:
            out = out + v["bias"].to(x.dtype)
        return out.expand(x.shape)

    def instance_grads(self, module, cap, g, names):
        normed = F.layer_norm(cap["x"], module.normalized_shape, eps=module.eps).to(g.dtype)
        axes = tuple(range(1, g.dim() - len(module.normalized_shape)))
        grads = {}
        if "weight" in names:
            grads["weight"] = (g * normed).sum(axes)
        if "bias" in names:
            grads["bias"] = g.sum(axes)
        return grads


class GenericRule(Rule):
    """Exact fallback for any module: forward-mode JVP / per-sample VJP of a functional call."""

    def capture(self, module, args, kwargs):
        device = next(module.parameters()).device.type
        detached_args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
        detached_kwargs = {k: a.detach() if isinstance(a, torch.Tensor) else a for k, a in kwargs.items()}
        cap = {"args": detached_args, "kwargs": detached_kwargs, "autocast": _autocast_state(device)}
        return _remember(cap, *tensor_leaves(args), *tensor_leaves(kwargs))

    def tangent(self, module, cap, v, in_dual_level=False):
        _check_version(cap, type(module).__name__)
        own = {n: module.get_parameter(n) for n in v}  # dotted names for composite sites
        try:
            with suspended(), _replay(cap), torch.no_grad(), \
                    (nullcontext() if in_dual_level else fwAD.dual_level()):
                params = {n: fwAD.make_dual(own[n].detach(), t.to(own[n].dtype)) for n, t in v.items()}
                out = functional_call(module, params, cap["args"], cap["kwargs"])
                return _tangents_of(out)
        except Exception as error:  # noqa: BLE001 - re-raised with the module named
            raise NoRuleError(f"no exact rule for {type(module).__name__} (parameters {list(v)}): the generic "
                              f"forward-mode fallback failed with {type(error).__name__}: {error}") from error


class RMSNormRule(GenericRule):
    """RMSNorm variants with one weight: ``u = w ⊙ n(x)`` or ``u = (1 + w) ⊙ n(x)``, so ``δu = v_w ⊙ n(x)``.

    ``n(x) = x / sqrt(mean(x²) + ε)``, computed in float32 (as Llama and most HF models do, whatever
    the input dtype) or in the input's own precision. Which form and recipe a module follows is
    checked once, against the module's forward at random weights (matching to a few ulps of the
    output dtype); a module that fits none keeps the generic rule. One instance per module.
    """

    RECIPES = ("float32", "native")
    FORMS = ("scale", "one_plus")

    def __init__(self) -> None:
        self.recipe: str | None = None  # None: not checked yet; "": checked, fits no form

    @staticmethod
    def epsilon(module: nn.Module) -> float | None:
        for name in ("variance_epsilon", "eps", "epsilon"):
            value = getattr(module, name, None)
            if isinstance(value, float):
                return value
        return None

    def capture(self, module, args, kwargs):
        cap = super().capture(module, args, kwargs)
        if len(args) + len(kwargs) == 1:
            cap["x"] = (args[0] if args else next(iter(kwargs.values()))).detach()
        return cap

    def _normalised(self, cap: dict, eps: float, recipe: str) -> torch.Tensor:
        x = cap["x"]
        work = torch.float32 if recipe == "float32" else torch.promote_types(x.dtype, torch.float32)
        h = x.to(work)
        return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    def _check(self, module: nn.Module, cap: dict) -> str:
        """The recipe/form this module follows, found once from its forward at random weights."""
        if self.recipe is not None:
            return self.recipe
        self.recipe, eps, x = "", self.epsilon(module), cap.get("x")
        if eps is None or not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return self.recipe
        weight = module.weight
        generator = torch.Generator(device="cpu").manual_seed(0)
        trial = (torch.rand(weight.shape, generator=generator, dtype=torch.float64) + 0.5).to(weight)
        try:
            with suspended(), _replay(cap), torch.no_grad():
                actual = functional_call(module, {"weight": trial}, (x,))
        except Exception:  # noqa: BLE001 - an unusual forward simply keeps the generic rule
            return self.recipe
        if not isinstance(actual, torch.Tensor) or actual.shape != x.shape:
            return self.recipe
        tol = 8 * torch.finfo(actual.dtype).eps
        for recipe in self.RECIPES:
            n = self._normalised(cap, eps, recipe)
            for form in self.FORMS:
                scale = trial if form == "scale" else 1 + trial
                if torch.allclose((scale * n).double(), actual.double(), rtol=tol, atol=tol):
                    self.recipe = f"{recipe}:{form}"
                    return self.recipe
        return self.recipe

    def _unit(self, module: nn.Module, cap: dict) -> torch.Tensor:
        """``n(x)`` by the recipe found in ``_check`` (call only once that found one)."""
        return self._normalised(cap, self.epsilon(module), self.recipe.split(":")[0])

    def tangent(self, module, cap, v, in_dual_level=False):
        if in_dual_level or not self._check(module, cap) or "weight" not in v:
            return super().tangent(module, cap, v, in_dual_level)
        _check_version(cap, type(module).__name__)
        return v["weight"] * self._unit(module, cap)

    def instance_grads(self, module, cap, g, names):
        if names != ["weight"] or not self._check(module, cap):
            return super().instance_grads(module, cap, g, names)
        n = self._unit(module, cap)
        wide = _wide(g.dtype)
        return {"weight": (g.to(wide) * n.to(wide)).sum(tuple(range(1, g.dim() - 1)))}

    def contract_many(self, module, caps, g, vs, index=0):
        """``Σ_t <g_t, v ⊙ n(x_t)> = <Σ_t g_t ⊙ n(x_t), v>``: one reduction shared by all directions."""
        if not self._check(module, caps[0]) or any(v is not None and set(v) != {"weight"} for v in vs):
            return super().contract_many(module, caps, g, vs, index)
        _check_version(caps[0], type(module).__name__)
        grad = self.instance_grads(module, caps[0], g, ["weight"])["weight"]
        return [None if v is None else (grad @ v["weight"].to(grad.dtype)).double() for v in vs]


def _is_rms_norm(module: nn.Module) -> bool:
    """One vector ``weight`` and a class named ``*RMSNorm`` (the form itself is checked later)."""
    own = dict(module.named_parameters(recurse=False))
    return (type(module).__name__.lower().endswith("rmsnorm") and list(own) == ["weight"]
            and own["weight"].dim() == 1 and RMSNormRule.epsilon(module) is not None)


def _tangents_of(out):
    """Forward-mode tangents of a (nested) output, zeros where none flowed."""
    if isinstance(out, torch.Tensor):
        primal, tangent = fwAD.unpack_dual(out)
        return torch.zeros_like(primal) if tangent is None else tangent
    if isinstance(out, (tuple, list)):
        return type(out)(_tangents_of(o) for o in out)
    if isinstance(out, dict):
        return {k: _tangents_of(o) for k, o in out.items()}
    return out


def _generic_instance_grads(module, cap, g, names):
    """Per-sample gradients of ``Σ_t <g_t, u_t>`` by ``vmap`` over a VJP of a functional call."""
    if "args" not in cap:
        raise NoRuleError(f"{type(module).__name__} has no per-instance gradient rule")
    _check_version(cap, type(module).__name__)
    params = {n: module.get_parameter(n).detach() for n in names}
    batch = g.shape[0]
    args, kwargs = cap["args"], cap["kwargs"]
    # Tensors with the batch as leading dimension are mapped over; everything else is shared.
    slots = [(i, a) for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == batch]
    kw_slots = [(k, a) for k, a in kwargs.items()
                if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == batch]

    def single(values, kw_values, g_i):
        call_args = list(args)
        for (i, _), value in zip(slots, values):
            call_args[i] = value.unsqueeze(0)
        call_kwargs = dict(kwargs)
        for (k, _), value in zip(kw_slots, kw_values):
            call_kwargs[k] = value.unsqueeze(0)
        _, pullback = vjp(lambda p: functional_call(module, p, tuple(call_args), call_kwargs), params)
        return pullback(g_i.unsqueeze(0))[0]

    try:
        with suspended(), _replay(cap), torch.no_grad():
            return vmap(single)(tuple(a for _, a in slots), tuple(a for _, a in kw_slots), g)
    except Exception as error:  # noqa: BLE001 - re-raised with the module named
        raise NoRuleError(f"no per-instance gradient for {type(module).__name__} (parameters {names}): the "
                          f"torch.func vmap/VJP fallback failed with {type(error).__name__}: {error}") from error


LINEAR = LinearRule()
CONV1D = LinearRule(transposed=True)
EMBEDDING = EmbeddingRule()
LAYER_NORM = LayerNormRule()
GENERIC = GenericRule()


def _plain(module: nn.Module, base: type) -> bool:
    return isinstance(module, base) and type(module).forward is base.forward


def rule_for(module: nn.Module, where: str = "") -> Rule:
    """The exact rule for a module owning trainable parameters (closed forms for plain layers)."""
    from geffect.effects.groups import expert_count

    count = expert_count(module)
    if count:
        from geffect.effects.experts import ExpertsRule

        return ExpertsRule(count)
    if _plain(module, nn.Linear):
        return LINEAR
    if Conv1D is not None and _plain(module, Conv1D):
        return CONV1D
    if _plain(module, nn.Embedding):
        if module.max_norm is not None or module.scale_grad_by_freq:
            raise NoRuleError(f"embedding {where or type(module).__name__} uses max_norm or scale_grad_by_freq; "
                              "its parameter update is not a gradient, so geffect has no exact rule for it")
        return EMBEDDING
    if _plain(module, nn.LayerNorm):
        return LAYER_NORM
    if _is_rms_norm(module):
        return RMSNormRule()
    return GENERIC
