"""Multi-layer probe-direction unlearning: our reading of the toxicity objective of Atil, Gupta and
Passonneau (2026).

The abstract asks, for toxicity, for "a multi-layer objective based on layer-specific probe
directions". Our interpretation (every choice a hyper-parameter): for each block ℓ of a set S, a
logistic-regression probe (w_ℓ, b_ℓ) on mean-pooled block-ℓ activations separates toxic (forget)
from non-toxic (retain) text of the task; unlearning then removes the toxic component of the
forget activations along each ŵ_ℓ = w_ℓ/‖w_ℓ‖ (``form="erase"``) or pushes them to the probe's
non-toxic side (``form="flip"``), while a retain term keeps the model's behaviour on non-toxic text.

The probes are fitted once, on the model before unlearning: by the trainer's ``probe_directions``
companion (on the training splits, cached in the run directory, accuracies logged), or by
:func:`fit_probe_directions` from any batches. Logistic regression is a few Newton steps in
float64 (no extra dependency).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from geffect.objectives.compose import retain_kl, retain_nll
from geffect.objectives.cosine_rmu import ATIL
from geffect.objectives.registry import ObjectiveOutput, objective
from geffect.objectives.representation import token_positions
from geffect.objectives.terms import (
    check_layer,
    decoder_blocks,
    hidden_states_at_blocks,
    instance_mean,
)

__all__ = ["FORMS", "ProbeDirections", "fit_logistic", "fit_probe_directions", "pooled_activations",
           "probe_directions", "probe_layers"]

Batch = Mapping[str, torch.Tensor]

# Forget terms per position, from the block activation h (B, T, H) and one layer's probe (w, b).
FORMS = {
    "erase": lambda h, w, b: (h @ (w / w.norm())).pow(2),  # ⟨h, ŵ⟩²: the toxic component, removed
    "flip": lambda h, w, b: F.softplus(h @ w + b),  # −log P(non-toxic | h): crossed to the clean side
}
RETAIN_TERMS = {
    "nll": lambda model, retain, ref_model: retain_nll(model, retain),
    "kl": lambda model, retain, ref_model: retain_kl(model, ref_model, retain),
}


@dataclass
class ProbeDirections:
    """Fitted probes: ``weight[k]``, ``bias[k]`` of the logistic probe of block ``layers[k]``
    (P(toxic | h) = σ(⟨h, w⟩ + b) on mean-pooled activations), and their accuracies."""

    layers: list[int]
    weight: torch.Tensor  # (len(layers), H), float64
    bias: torch.Tensor  # (len(layers),), float64
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # "block.k" -> train/heldout/rows

    def probe(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(w, b) of block ``layer``."""
        if layer not in self.layers:
            raise KeyError(f"no probe was fitted for block {layer}; fitted blocks: {self.layers}")
        k = self.layers.index(layer)
        return self.weight[k], self.bias[k]

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.safetensors`` (weights) and ``<path>.json`` (layers, accuracies)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"weight": self.weight.detach().cpu().contiguous(), "bias": self.bias.detach().cpu().contiguous()}
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(tensors, str(tmp.with_suffix(".safetensors")))
        tmp.with_suffix(".json").write_text(json.dumps({"layers": self.layers, "accuracy": self.accuracy}, indent=2))
        tmp.with_suffix(".safetensors").replace(path.with_suffix(".safetensors"))
        tmp.with_suffix(".json").replace(path.with_suffix(".json"))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ProbeDirections:
        """Read what :meth:`save` wrote."""
        from safetensors.torch import load_file

        path = Path(path)
        tensors = load_file(str(path.with_suffix(".safetensors")))
        meta = json.loads(path.with_suffix(".json").read_text())
        return cls(list(meta["layers"]), tensors["weight"], tensors["bias"], meta.get("accuracy", {}))


# -- fitting ----------------------------------------------------------------------------------------


def fit_logistic(features: torch.Tensor, labels: torch.Tensor, l2: float = 1e-3,
                 iterations: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, b) minimising mean BCE(σ(Xw + b), y) + l2/2·‖w̃‖², by Newton's method in float64.

    Features are standardised for the fit (‖w̃‖ is the norm on that scale, so ``l2`` does not
    depend on the activations' scale); the returned w, b act on the raw features.
    """
    x = features.detach().to(torch.float64)
    y = labels.detach().to(device=x.device, dtype=torch.float64)
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"expected features (N, H) and labels (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not bool(((y == 0) | (y == 1)).all()) or y.min() == y.max():
        raise ValueError("labels must be 0/1 with both classes present")
    mean, scale = x.mean(0), x.std(0).clamp_min(1e-8)
    z = torch.cat([(x - mean) / scale, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], dim=1)
    theta = torch.zeros(z.shape[1], dtype=x.dtype, device=x.device)
    penalty = torch.full_like(theta, l2)
    penalty[-1] = 0.0  # no penalty on the intercept
    eye = torch.eye(len(theta), dtype=x.dtype, device=x.device)

    def objective(t: torch.Tensor) -> float:
        return float(F.binary_cross_entropy_with_logits(z @ t, y) + 0.5 * (penalty * t * t).sum())

    for _ in range(iterations):
        p = torch.sigmoid(z @ theta)
        grad = z.T @ (p - y) / len(y) + penalty * theta
        hessian = (z.T * (p * (1 - p))) @ z / len(y) + torch.diag(penalty) + 1e-10 * eye
        step = torch.linalg.solve(hessian, grad)
        current, size = objective(theta), 1.0
        while size > 1e-4 and objective(theta - size * step) > current:  # backtrack: Newton may overshoot
            size /= 2
        theta = theta - size * step
        if float(grad.abs().max()) < 1e-10:
            break
    w = theta[:-1] / scale
    return w, theta[-1] - (w * mean).sum()


@torch.no_grad()
def pooled_activations(model: torch.nn.Module, batch: Batch, layers: Sequence[int],
                       tokens: str = "answer") -> dict[int, torch.Tensor]:
    """Per block: the mean over each instance's ``tokens`` positions of its activations (B, H), float64."""
    hidden = hidden_states_at_blocks(model, batch, layers)
    mask = token_positions(batch, tokens, next(iter(hidden.values())).device)
    weights = (mask / mask.sum(1, keepdim=True)).to(torch.float64)
    return {layer: torch.einsum("bt,bth->bh", weights, h.to(torch.float64)).cpu() for layer, h in hidden.items()}


def probe_layers(model: torch.nn.Module, layers: str | int | Iterable[int] = "all",
                 single_layer: int | None = None) -> list[int]:
    """The block set S: ``single_layer`` alone when given, else ``layers`` (``"all"``, one block or a list)."""
    if single_layer is not None:
        return [check_layer(model, single_layer)]
    if layers == "all":
        return list(range(len(decoder_blocks(model)[1])))
    chosen = [layers] if isinstance(layers, int) else list(layers)
    if not chosen:
        raise ValueError("layers is empty: give 'all', a block index or a list of block indices")
    return sorted({check_layer(model, int(layer)) for layer in chosen})


def fit_probe_directions(model: torch.nn.Module, toxic: Iterable[Batch], clean: Iterable[Batch],
                         layers: Sequence[int], tokens: str = "answer", l2: float = 1e-3,
                         holdout: float = 0.2, seed: int = 0) -> ProbeDirections:
    """Fit one logistic probe per block on mean-pooled activations: toxic (label 1) vs clean (0) batches.

    A seeded ``holdout`` fraction of the rows of each class is kept out of the fit to measure the
    held-out accuracy; the returned probes are then refitted on all rows.
    """
    was_training = model.training
    model.eval()
    try:
        pooled = [pooled_activations(model, b, layers, tokens) for b in toxic]
        n_toxic = sum(p[layers[0]].shape[0] for p in pooled)
        pooled += [pooled_activations(model, b, layers, tokens) for b in clean]
    finally:
        model.train(was_training)
    features = {layer: torch.cat([p[layer] for p in pooled]) for layer in layers}
    size = features[layers[0]].shape[0]
    labels = torch.zeros(size, dtype=torch.float64)
    labels[:n_toxic] = 1.0
    if n_toxic in (0, size):
        raise ValueError(f"probe fitting needs toxic and non-toxic rows; got {n_toxic} toxic of {size}")
    held = torch.zeros(size, dtype=torch.bool)
    gen = torch.Generator().manual_seed(seed)
    for rows in (torch.arange(n_toxic), torch.arange(n_toxic, size)):
        count = int(holdout * len(rows)) if len(rows) > 1 else 0
        held[rows[torch.randperm(len(rows), generator=gen)[:count]]] = True
    weights, biases, accuracy = [], [], {}
    for layer in layers:
        x = features[layer]
        scores: dict[str, float] = {"rows": float(size)}
        if bool(held.any()):
            w, b = fit_logistic(x[~held], labels[~held], l2)
            scores["heldout"] = float((((x[held] @ w + b) > 0).double() == labels[held]).double().mean())
        w, b = fit_logistic(x, labels, l2)
        scores["train"] = float((((x @ w + b) > 0).double() == labels).double().mean())
        weights.append(w)
        biases.append(b)
        accuracy[f"block.{layer}"] = scores
    return ProbeDirections(list(layers), torch.stack(weights), torch.stack(biases), accuracy)


# -- the objective ----------------------------------------------------------------------------------


@objective("probe_directions", family="representation", paper=ATIL, companion="probe_directions",
           formula="L = Σ_{ℓ∈S} λ_ℓ·E_f[mean_t ⟨h_ℓ, ŵ_ℓ⟩²] + E_r[NLL]  (erase; probes fitted first; interpretation)")
def probe_directions(model: torch.nn.Module, forget: Batch, retain: Batch, ref_model: torch.nn.Module,
                     layers: Any = "all", single_layer: int | None = None, form: str = "erase",
                     layer_weights: Sequence[float] | None = None, forget_weight: float = 1.0,
                     retain_term: str = "nll", retain_weight: float = 1.0, tokens: str = "answer",
                     probe_rows: int = 256, probe_l2: float = 1e-3, probe_holdout: float = 0.2,
                     probes: ProbeDirections | None = None) -> ObjectiveOutput:
    """Probe-direction unlearning across blocks (interpretation of Atil et al. 2026, toxicity).

    L = forget_weight·Σ_{ℓ∈S} λ_ℓ·E_f[ mean_t φ_ℓ(h_ℓ(x)_t) ] + retain_weight·R, over the forget
    (toxic continuation) positions ``tokens``, with φ_ℓ(h) = ⟨h, ŵ_ℓ⟩² (``form="erase"``: remove
    the toxic component along the unit probe direction) or softplus(⟨h, w_ℓ⟩ + b_ℓ)
    (``"flip"``: −log P(non-toxic) under the probe). S: every block (``layers="all"``), a list,
    or one block with ``single_layer`` (the ablation of "multi-layer"). λ_ℓ: ``layer_weights``,
    default equal and summing to 1 (so one block and many have the same total weight). R: NLL
    on the retain (non-toxic) batch (``retain_term="nll"``) or KL to the frozen model (``"kl"``).

    ``probes``: the fitted :class:`ProbeDirections`. The trainer fits them before the first step
    on up to ``probe_rows`` forget and retain rows (Newton logistic regression, L2 ``probe_l2``,
    ``probe_holdout`` of the rows held out for the logged accuracy) and passes them here; called
    directly without them, probes are fitted on the given forget vs retain batch. Every choice is
    this project's reading of the abstract. ``parts``: ``forget``, ``retain`` and ``forget_block.ℓ``.
    All parameters train by default.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {sorted(FORMS)}, got {form!r}")
    if retain_term not in RETAIN_TERMS:
        raise ValueError(f"retain_term must be one of {sorted(RETAIN_TERMS)}, got {retain_term!r}")
    chosen = probe_layers(model, layers, single_layer)
    if probes is None:
        probes = fit_probe_directions(model, [forget], [retain], chosen, tokens, probe_l2, holdout=0.0)
    elif not isinstance(probes, ProbeDirections):
        raise TypeError(f"probes must be fitted ProbeDirections or None, got {type(probes).__name__}")
    lam = [1.0 / len(chosen)] * len(chosen) if layer_weights is None else [float(v) for v in layer_weights]
    if len(lam) != len(chosen):
        raise ValueError(f"layer_weights has {len(lam)} entries for {len(chosen)} blocks {chosen}")
    hidden = hidden_states_at_blocks(model, forget, chosen)
    mask = token_positions(forget, tokens, next(iter(hidden.values())).device)
    parts: dict[str, torch.Tensor] = {}
    per_instance = 0.0
    for weight, layer in zip(lam, chosen):
        h = hidden[layer]
        h = h.float() if h.dtype in (torch.float16, torch.bfloat16) else h
        w, b = (t.to(device=h.device, dtype=h.dtype) for t in probes.probe(layer))
        term = instance_mean(FORMS[form](h, w, b), mask)
        parts[f"forget_block.{layer}"] = term.mean()
        per_instance = per_instance + weight * term
    forget_term = per_instance.mean()
    retain_value = RETAIN_TERMS[retain_term](model, retain, ref_model)
    loss = forget_weight * forget_term + retain_weight * retain_value
    return ObjectiveOutput(loss=loss, parts={"forget": forget_term, "retain": retain_value, **parts},
                           per_instance=per_instance)
