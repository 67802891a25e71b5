"""Representation-family objectives: RMU and the representation-retention term (RR).

Both act on h_ℓ, the output of transformer block ℓ (``terms.hidden_states_at``), at a set
of token positions: ``tokens="answer"`` (default) takes the positions that predict answer
tokens (the label mask after the causal shift, as the G-effect code of Wang et al. 2025
does for QA data; on text rows, where every token is a label, these are all positions but
the last); ``tokens="all"`` takes every real token (as RMU does on raw text).
Squared distances are averaged over hidden units, as in the WMDP code (the paper writes
squared L2 norms; the two differ by the constant factor 1/H in both terms).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from geffect.objectives.compose import combine
from geffect.objectives.registry import ObjectiveOutput, objective
from geffect.objectives.terms import check_layer, decoder_blocks, hidden_states_at, instance_mean
from geffect.schema import IGNORE_INDEX

__all__ = ["DISTANCES", "cosine_distance", "default_layer", "representation_retention", "resolve_layer", "rmu", "rmu_trainable", "rr",
           "steering_vector", "token_positions"]

Batch = Mapping[str, torch.Tensor]

_RMU = ("Li et al. 2024, The WMDP Benchmark: Measuring and Reducing Malicious Use with "
        "Unlearning (ICML 2024), method RMU")
# RMU's paper setting: block 7 of Zephyr-7B's 32; the MLP of blocks ℓ-2..ℓ trains.
_PAPER_LAYER, _PAPER_DEPTH = 7, 32
_TOKEN_MODES = ("answer", "all")
_MLP_OUTPUT_NAMES = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2")


def default_layer(model: torch.nn.Module) -> int:
    """Block at the paper's relative depth: round(7/32·L) (block 7 for a 32-block model)."""
    n = len(decoder_blocks(model)[1])
    return min(n - 1, round(_PAPER_LAYER / _PAPER_DEPTH * n))


def resolve_layer(model: torch.nn.Module, layer: int | None) -> int:
    """``layer`` checked against the model, or the default block when it is None."""
    return default_layer(model) if layer is None else check_layer(model, layer)


def token_positions(batch: Batch, tokens: str, device: torch.device) -> torch.Tensor:
    """Boolean (B, T) mask of the positions whose hidden states the terms use."""
    if tokens == "all":
        return batch["attention_mask"].to(device).bool()
    if tokens == "answer":
        labels = batch["labels"].to(device)
        mask = torch.zeros_like(labels, dtype=torch.bool)
        mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
        return mask
    raise ValueError(f"tokens must be one of {_TOKEN_MODES}, got {tokens!r}")


def steering_vector(hidden_size: int, seed: int = 0, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """RMU's fixed random direction u: entries uniform in [0, 1), scaled to unit norm.

    Drawn from a generator seeded with ``seed``, so it is the same at every step.
    """
    u = torch.rand(hidden_size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (u / u.norm()).to(dtype=dtype, device=device)


def _squared_distance(hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-position mean over hidden units of (hidden - target)² (B, T), in float32 at least."""
    if hidden.dtype in (torch.float16, torch.bfloat16):
        hidden, target = hidden.float(), target.float()
    return (hidden - target).pow(2).mean(dim=-1)


def cosine_distance(hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-position 1 − cos(hidden, target) over the hidden units (B, T), in float32 at least.

    ``target`` is (B, T, H) or one direction (H,) shared by every position.
    """
    if hidden.dtype in (torch.float16, torch.bfloat16):
        hidden, target = hidden.float(), target.float()
    return 1.0 - torch.nn.functional.cosine_similarity(hidden, target.expand_as(hidden), dim=-1, eps=1e-12)


# Distances of block activations to a target, per position: name -> fn(hidden, target) -> (B, T).
DISTANCES = {"l2": _squared_distance, "cosine": cosine_distance}


def representation_retention(model: torch.nn.Module, retain: Batch, ref_model: torch.nn.Module,
                             layer: int | None = None, tokens: str = "answer",
                             distance: str = "l2") -> torch.Tensor:
    """RR term: E_r[ mean_t d(h_ℓ(x)_t, h_ℓ^ref(x)_t) ] (a scalar).

    Keeps block ℓ's activations on retain data at those of the frozen reference model; the
    retain term of RMU (Li et al. 2024), usable on its own (objective ``rr``) or added to
    any objective with ``compose.combine``. ``distance``: ``"l2"`` (RMU's mean over hidden
    units of the squared difference) or ``"cosine"`` (1 − cos, scale-free).
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {sorted(DISTANCES)}, got {distance!r}")
    layer = resolve_layer(model, layer)
    hidden = hidden_states_at(model, retain, layer)
    with torch.no_grad():
        ref_hidden = hidden_states_at(ref_model, retain, layer).to(hidden.dtype)
    mask = token_positions(retain, tokens, hidden.device)
    return instance_mean(DISTANCES[distance](hidden, ref_hidden), mask).mean()


def rmu_trainable(model: torch.nn.Module, hparams: Mapping[str, Any]) -> list[str]:
    """MLP output projections of blocks ℓ-2, ℓ-1, ℓ (the WMDP code's default for RMU).

    Falls back to every MLP parameter of those blocks when no output projection is
    recognised by name (down_proj, c_proj, dense_4h_to_h, fc2, w2).
    """
    layer = resolve_layer(model, hparams.get("layer"))
    prefix, _ = decoder_blocks(model)
    names: list[str] = []
    for index in range(max(0, layer - 2), layer + 1):
        block = f"{prefix}.{index}."
        mlp = [n for n, _ in model.named_parameters() if n.startswith(block) and ".mlp." in n[len(block) - 1:]]
        out = [n for n in mlp if any(f".{key}." in n for key in _MLP_OUTPUT_NAMES)]
        names += out or mlp
    if not names:
        raise ValueError(f"found no MLP parameters in blocks {max(0, layer - 2)}..{layer} of "
                         f"{type(model).__name__}; pass the parameters to train explicitly")
    return names


@objective("rmu", family="representation", paper=_RMU, trainable=rmu_trainable,
           formula="L = E_f[mean_t ‖h_ℓ - c·u‖²/H] + α·E_r[mean_t ‖h_ℓ - h_ℓ^ref‖²/H]")
def rmu(model: torch.nn.Module, forget: Batch, retain: Batch, ref_model: torch.nn.Module,
        layer: int | None = None, steering_coeff: float = 6.5, alpha: float = 1200.0,
        tokens: str = "answer", seed: int = 0) -> ObjectiveOutput:
    """Representation misdirection for unlearning (RMU, Li et al. 2024).

    L = E_f[ mean_t ‖h_ℓ(x)_t - c·u‖²/H ] + α·E_r[ mean_t ‖h_ℓ(x)_t - h_ℓ^ref(x)_t‖²/H ]:
    forget activations at block ℓ are steered to a fixed random direction u (unit norm,
    ``steering_vector(H, seed)``) scaled by c, retain activations are kept at the frozen
    model's. Defaults c = 6.5, α = 1200 (the paper's Zephyr-7B setting) and block ℓ at the
    paper's relative depth (7 of 32; ``default_layer``); these scales are tuned for a
    7B model and may need tuning elsewhere. By default only the MLP output projections of
    blocks ℓ-2..ℓ train (``ObjectiveSpec.trainable``). ``parts``: ``forget``, ``retain``.
    RMU does not act on the output likelihood directly, so its forget NLL need not rise
    at every step; its own forget term is what one step decreases.
    """
    layer = resolve_layer(model, layer)
    hidden = hidden_states_at(model, forget, layer)
    target = steering_coeff * steering_vector(hidden.shape[-1], seed, hidden.dtype, hidden.device)
    per_instance = instance_mean(_squared_distance(hidden, target), token_positions(forget, tokens, hidden.device))
    forget_term = per_instance.mean()
    base = ObjectiveOutput(loss=forget_term, parts={"forget": forget_term}, per_instance=per_instance)
    return combine(base, retain=(alpha, representation_retention(model, retain, ref_model, layer, tokens)))


@objective("rr", family="representation", paper=_RMU,
           formula="L = weight·E_r[mean_t ‖h_ℓ - h_ℓ^ref‖²/H]")
def rr(model: torch.nn.Module, forget: Batch, retain: Batch, ref_model: torch.nn.Module,
       layer: int | None = None, weight: float = 1.0, tokens: str = "answer") -> ObjectiveOutput:
    """Representation retention (RR) alone: keep block ℓ's retain activations at the reference.

    L = weight·E_r[ mean_t ‖h_ℓ(x)_t - h_ℓ^ref(x)_t‖²/H ] (RMU's retain term, Li et al.
    2024). It has no forget term (the forget batch is unused): with θ = θ_ref its value and
    gradient are zero, so it measures/undoes drift of the representation on retain data.
    """
    term = representation_retention(model, retain, ref_model, layer, tokens)
    return ObjectiveOutput(loss=weight * term, parts={"retain": term})
