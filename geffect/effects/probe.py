"""``EffectProbe``: per-instance, per-layer G-effects from one forward and one backward pass.

Definitions (Wang et al., ICLR 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective
and Go Beyond"): for probe instances with risks ``R_i(θ)`` (see ``geffect.effects.batch``) and a
direction ``v``, the effect of instance ``i`` in layer group ``k`` is ``e[i,k] = <∇_{θ_k} R_i, v_k>``
with ``Σ_k e[i,k] = ∇R_i · v``. With ``v`` the gradient of an unlearning objective this is the
paper's G-effect (one SGD step of size η changes ``R_i`` by ≈ ``-η e_i``); with ``v = Δθ`` the
applied update it is the first-order risk change of that step.

How: one batched forward records, at every module owning trainable parameters, its inputs; a
tensor hook on its output receives ``g = ∂(Σ_i R_i)/∂u`` during one backward pass and contracts
it with the module's output tangent along ``v`` (``geffect.effects.rules``). The backward is run
with ``torch.autograd.grad(..., inputs=<outputs of the first parametrised modules>)``, so
autograd computes input gradients only: no weight gradient is formed and ``.grad`` is untouched.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from geffect.effects.batch import (
    REDUCTIONS,
    instance_risks,
    prepare_batch,
    target_nll,
    vocabulary_size,
)
from geffect.effects.direction import Direction, gathered, resolve_direction, site_directions
from geffect.effects.groups import (
    Site,
    check_granularity,
    find_sites,
    merge_into_parents,
    ordered_columns,
)
from geffect.effects.hooks import SiteHooks, tensor_leaves
from geffect.effects.rules import Rule, rule_for
from geffect.effects.runtime import (
    coverage_gaps,
    forward_logits,
    measuring,
    model_device,
    takes_label_mask,
)


@dataclass
class EffectResult:
    """Effects of one measurement.

    ``values[i, k] = <∇_{θ_k} R_i, v_k>`` (float64, CPU, B × K) for columns ``groups`` (layer groups,
    or module names at module granularity; ``layers`` gives each column's layer group); ``risks[i]``
    is ``R_i`` at the current parameters, from the same forward pass.
    """

    values: torch.Tensor
    groups: list[str]
    risks: torch.Tensor
    layers: list[str] = field(default_factory=list)
    granularity: str = "layer"
    reduction: str = "instance"

    def total(self) -> torch.Tensor:
        """``∇R_i · v`` per instance (sum over groups)."""
        return self.values.sum(1)

    def to_frame(self, probe: str | None = None, step: int | None = None) -> pd.DataFrame:
        """Long table: one row per instance × column, with ``instance``, ``layer`` (+ ``module``), ``value``."""
        size, width = self.values.shape
        frame = pd.DataFrame({
            "instance": torch.arange(size).repeat_interleave(width).numpy(),
            "layer": (self.layers or self.groups) * size,
            "value": self.values.reshape(-1).numpy(),
        })
        if self.granularity == "module":
            frame.insert(2, "module", self.groups * size)
        if probe is not None:
            frame.insert(0, "probe", probe)
        if step is not None:
            frame.insert(0, "step", int(step))
        return frame


class _Backprop:
    """Handler for one chunk: record roots and inputs in the forward, contract in the backward.

    ``directions[d][site]`` is direction ``d``'s tensors for a site (None if it has none);
    ``columns[site]`` the result columns of the site's parts (one entry for a site without parts);
    ``values[d]`` collects that direction's B × K effects. The chunk's inputs are ``size`` × ``length``:
    a module called on the batch's tokens flattened to ``size·length`` rows (mixture-of-experts
    layers) has its row effects summed per instance (row ``r`` belongs to instance ``r // length``);
    one called on the label rows alone (the head, when the logits are asked for flat) has the
    effect of row ``r`` added to instance ``label_rows[r]``.
    """

    def __init__(self, rules: list[Rule], directions: list[list], columns: list[list[int]], size: int,
                 length: int, width: int, device: torch.device, label_rows: torch.Tensor | None = None):
        self.rules, self.directions, self.columns = rules, directions, columns
        self.size, self.length = size, length
        # row count -> instance of each row, for outputs whose rows are not the instances themselves:
        # the batch's tokens, then the label rows (a count equal to the instances' means instances)
        self.owners = {size * length: torch.arange(size * length, device=device) // length}
        if label_rows is not None:
            self.owners.setdefault(label_rows.numel(), label_rows)
        self.owners.pop(size, None)
        self.values = torch.zeros(len(directions), size, width, dtype=torch.float64, device=device)
        self.roots: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self.calls: Counter = Counter()
        self.stray: set[int] = set()  # sites whose output rows are neither instances nor tokens

    def __call__(self, site: Site, args: tuple, kwargs: dict, output):
        self.calls[site.index] += 1
        outputs = [(k, t) for k, t in enumerate(tensor_leaves(output)) if t.requires_grad]
        if not outputs:
            return None
        if any(t.dim() and t.shape[0] != self.size and t.shape[0] not in self.owners for _, t in outputs):
            self.stray.add(site.index)
        replaced = None
        if len(outputs) > 1:
            # Outputs computed from one another (a router's scores from its logits) would pass their
            # gradients on inside the module: hook aliases instead, which receive the outside uses only.
            replaced = separate_outputs(output)
            if replaced is not None:
                outputs = [(k, t) for k, t in enumerate(tensor_leaves(replaced)) if t.requires_grad]
        if not any(t.requires_grad for t in tensor_leaves((args, kwargs))):
            self.roots.extend(t for _, t in outputs)  # backward needs to reach these, no further
        self.outputs.extend(t for _, t in outputs)
        vs = [per_site[site.index] for per_site in self.directions]
        if all(v is None for v in vs):
            return replaced
        rule = self.rules[site.index]
        cap = rule.capture(site.module, args, kwargs)
        # one shallow copy of the capture per direction: tangent caches are per direction
        state = {"caps": [cap] if len(vs) == 1 else [dict(cap) for _ in vs], "left": len(outputs)}
        for k, tensor in outputs:
            tensor.register_hook(partial(self._contract, site, rule, vs, state, k))
        return replaced

    def _contract(self, site: Site, rule: Rule, vs: list, state: dict, index: int, grad: torch.Tensor) -> None:
        caps, size = state["caps"], self.size
        tokens = size * self.length
        if grad.dim() and grad.shape[0] == tokens != size:
            grouped = [rule.regroup(cap, size) for cap in caps]
            if all(cap is not None for cap in grouped):
                caps, grad = grouped, grad.reshape(size, -1, *grad.shape[1:])
        effects = rule.contract_many(site.module, caps, grad, [gathered(v) for v in vs], index)
        columns = self.columns[site.index]
        for d, effect in enumerate(effects):
            if effect is None:
                continue
            if effect.dim() and effect.shape[0] in self.owners:  # row effects summed per instance
                effect = effect.new_zeros(size, *effect.shape[1:]).index_add_(0, self.owners[effect.shape[0]], effect)
            if effect.dim() not in (1, 2) or effect.shape[0] != size:
                raise RuntimeError(f"module {site.path!r} gave per-row effects shaped {tuple(effect.shape)}: its "
                                   f"rows are neither the {size} instances nor their {tokens} tokens, so geffect "
                                   "cannot attribute its effect to instances")
            effect = effect.reshape(size, -1).to(self.values.dtype)  # one column per part
            if len(columns) == 1:
                self.values[d, :, columns[0]] += effect.sum(1)
                continue
            if effect.shape[1] != len(columns):
                raise RuntimeError(f"module {site.path!r} has {len(columns)} parts but its rule gave "
                                   f"{effect.shape[1]} effects per instance")
            self.values[d].index_add_(1, torch.as_tensor(columns, device=effect.device), effect)
        state["left"] -= 1
        if state["left"] == 0:
            state["caps"] = None  # free the saved inputs as soon as possible
        return None


def separate_outputs(output):
    """``output`` with each differentiable tensor replaced by an alias of it, or None if it holds
    tensors in a container other than tuples, lists and plain dicts."""
    if isinstance(output, torch.Tensor):
        return output.view_as(output) if output.requires_grad else output
    if type(output) in (tuple, list):
        items = [separate_outputs(item) for item in output]
        if any(new is None and old is not None for new, old in zip(items, output)):
            return None
        return type(output)(items)
    if type(output) is dict:
        items = {k: separate_outputs(item) for k, item in output.items()}
        return None if any(items[k] is None and output[k] is not None for k in output) else items
    return None if tensor_leaves(output) else output


class EffectProbe:
    """Reusable G-effect meter on a model: hooks are registered once, active only inside ``measure``.

    ``granularity``: ``"layer"`` (embed, block.i, final_norm, lm_head) or ``"module"``;
    ``reduction``: ``"instance"`` (per-instance mean NLL) or ``"token"`` (the paper's batch token
    mean, split in per-instance shares; see ``geffect.effects.batch``); ``dtype``: measure in this
    precision (e.g. ``torch.float32`` for a bf16 model or under bf16 autocast: parameters are cast
    for each measurement and restored bit for bit; None: the model's own). Effects are accumulated
    in float32 at least and returned in float64. Use as a context manager or call ``close()`` to
    remove the hooks.

    The first measurement checks that every trainable parameter enters the loss through its own
    module's forward. A module whose parameters a parent uses functionally (a Mamba mixer's
    ``conv1d.weight``, a fused experts weight sliced by its parent) is then measured together with
    that parent, as one site with all of the parent's parameters (exact generic rule), and the
    measurement is rerun; ``groups`` then names the merged modules at module granularity.
    """

    def __init__(self, model: nn.Module, granularity: str = "layer", reduction: str = "instance",
                 dtype: torch.dtype | None = None):
        check_granularity(granularity)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.model, self.granularity, self.reduction, self.dtype = model, granularity, reduction, dtype
        self._composites: set[str] = set()
        self._hooks: SiteHooks | None = None
        self._plan(find_sites(model))
        self._checked = False

    def _plan(self, sites: list[Site]) -> None:
        """Sites, their rules and result columns, and the hooks on them."""
        self.sites = sites
        self.rules = [rule_for(site.module, site.path) for site in sites]
        self.groups = ordered_columns(sites, self.granularity)
        index = {name: k for k, name in enumerate(self.groups)}
        self._columns = [[index[c] for c in site.columns(self.granularity)] for site in sites]
        layer_of = {c: site.group for site in sites for c in site.columns(self.granularity)}
        self.layers = [layer_of[name] for name in self.groups]
        if self._hooks is not None:
            self._hooks.close()
        self._hooks = SiteHooks(sites)

    def _covered(self, total: torch.Tensor, session: _Backprop) -> bool:
        """Check once that every site's effect can be measured and attributed; merge the modules that
        cannot into their parents (False: replanned, measure again)."""
        gaps = coverage_gaps(total, self.sites, session.calls, self.rules, self.model)
        gaps += [([self.sites[k]], f"module {self.sites[k].path!r} works on rows that are neither the batch's "
                                   "instances nor its tokens, so its effect cannot be attributed to instances")
                 for k in sorted(session.stray)]
        if not gaps:
            self._checked = True
            return True
        try:
            self._composites = merge_into_parents(self.model, [s for owners, _ in gaps for s in owners],
                                                  self._composites)
        except ValueError:
            raise RuntimeError(gaps[0][1]) from None
        self._plan(find_sites(self.model, self._composites))
        return False

    def measure(self, direction: Direction, batch: Mapping, chunk_size: int | None = None) -> EffectResult:
        """Effects ``e[i,k] = <∇_{θ_k} R_i, v_k>`` of every instance of ``batch`` along ``direction``.

        ``direction``: mapping parameter name -> tensor (missing trainable parameters count as zero)
        or ``"grad"`` (the parameters' current ``.grad``). ``chunk_size`` splits the batch into
        chunks of that many instances (same result, less memory).
        """
        return self.measure_many({"direction": direction}, batch, chunk_size)["direction"]

    def measure_many(self, directions: Mapping[str, Direction], batch: Mapping,
                     chunk_size: int | None = None) -> dict[str, EffectResult]:
        """``measure`` for several named directions from the same forward and backward pass.

        The backward's output gradients are contracted with each direction in turn, so e.g. the
        objective gradient and the applied update cost one pass, not two. Returns name -> result
        (all share ``risks``).
        """
        if not isinstance(directions, Mapping) or not directions:
            raise TypeError("directions must be a non-empty mapping of name -> direction")
        names = list(directions)
        resolved = [resolve_direction(self.model, directions[n]) for n in names]
        probe = prepare_batch(batch, self.reduction, vocabulary_size(self.model)).to(model_device(self.model))
        values, risks = [], []
        chunks = list(probe.chunks(chunk_size))
        with measuring(self.model, self.dtype), torch.enable_grad():
            for _, chunk in tqdm(chunks, desc="G-effects", leave=False, disable=len(chunks) < 2):
                done = None
                while done is None:  # more than once only while the first measurement replans
                    done = self._chunk(resolved, chunk)
                values.append(done[0].cpu())
                risks.append(done[1].cpu())
        stacked, risk = torch.cat(values, dim=1), torch.cat(risks)
        return {name: EffectResult(values=stacked[d], groups=list(self.groups), risks=risk,
                                   layers=list(self.layers), granularity=self.granularity,
                                   reduction=self.reduction)
                for d, name in enumerate(names)}

    def _chunk(self, resolved: list[dict], chunk) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(values D × B × K, risks) of one chunk, or None if the sites were replanned."""
        per_site = [site_directions(self.sites, r) for r in resolved]
        flat = chunk.label_mask is not None and takes_label_mask(self.model)
        session = _Backprop(self.rules, per_site, self._columns, chunk.size, chunk.inputs["input_ids"].shape[1],
                            len(self.groups), model_device(self.model), chunk.rows if flat else None)
        with self._hooks.active(session):
            try:
                nll = target_nll(forward_logits(self.model, chunk, flat=flat), chunk)
                total = (nll * chunk.weights.to(nll.dtype)).sum()
                if not session.outputs:
                    raise RuntimeError("no trainable parameter took part in the forward pass")
                if not self._checked and not self._covered(total, session):
                    return None
                # Inputs that require grad without a trainable module upstream (e.g. Hugging
                # Face's enable_input_require_grads) hide where the network starts: then stop
                # the backward at every site output instead (exact, holds more gradients).
                roots = session.roots or session.outputs
                if any(v is not None for dirs in per_site for v in dirs):  # else all effects are zero
                    torch.autograd.grad(total, roots, allow_unused=True)
            finally:
                # the hooks on these tensors refer back to the session: break the cycle so
                # the graph and its saved activations are freed now, not at the next gc
                session.roots, session.outputs, roots = [], [], []
        return session.values, instance_risks(nll, chunk)

    def close(self) -> None:
        """Remove the hooks from the model."""
        self._hooks.close()

    def __enter__(self) -> EffectProbe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
