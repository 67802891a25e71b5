"""Mixture-of-experts models: per-instance and per-expert effects against the brute-force oracle.

Every MoE causal-LM family of the installed transformers (found by ``moe_models.moe_families``)
is built tiny and random in float64 with the eager experts implementation; the engine's effects
(router, fused experts with each token's routing, shared experts, tokens flattened to rows) must
match the oracle, which runs each instance alone and takes full autograd gradients.
"""

from __future__ import annotations

import pytest
import torch
from moe_models import FLOAT32, LEFT_PADDING_VARIANT, make_moe, moe_families
from torch import nn
from toy_models import make_batch, random_direction

from geffect.effects import (
    EffectProbe,
    gradient_effect,
    oracle_effects,
    oracle_token_effects,
    token_effect,
)
from geffect.effects.groups import find_sites

FAMILIES = moe_families()
CORE = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "gpt_oss")  # fast; the rest are `slow`


def oracle_on(result, oracle, merged: set[str]) -> torch.Tensor:
    """The oracle's values on the engine's columns (a ``merged`` module's column sums its modules')."""
    columns = []
    for name in result.groups:
        picked = [k for k, column in enumerate(oracle.groups)
                  if column == name or (name in merged and column.startswith(name + "."))]
        assert picked, f"engine column {name!r} has no oracle counterpart"
        columns.append(oracle.values[:, picked].sum(1))
    return torch.stack(columns, 1)


def test_the_families_are_found():
    assert {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "dbrx", "jetmoe"} <= set(FAMILIES)


@pytest.mark.parametrize("family", [pytest.param(f, marks=() if f in CORE else pytest.mark.slow) for f in FAMILIES])
def test_family_matches_oracle(family, assert_rel_close):
    dtype = torch.float32 if family in FLOAT32 else torch.float64
    tolerance = 1e-4 if dtype == torch.float32 else 1e-5  # some routers and scans compute in float32
    model = make_moe(family, dtype)
    direction = random_direction(model)
    stacked = [name for name, p in model.named_parameters() if p.dim() == 3]
    left = "right" if family in LEFT_PADDING_VARIANT else "left"
    for side, granularity in ((left, "module"), ("right", "layer")):
        batch = make_batch(3, 10, side)
        with EffectProbe(model, granularity=granularity) as probe:
            result = probe.measure(direction, batch)
            merged = [site.path for site in probe.sites if site.composite]
            columns = {column for site in probe.sites if site.composite for column in site.columns(granularity)}
        oracle = oracle_effects(model, direction, batch, granularity=granularity)
        expected = oracle_on(result, oracle, columns if granularity == "module" else set())
        assert_rel_close(result.values, expected, tolerance)
        assert_rel_close(result.risks, oracle.risks, 1e-6 if dtype == torch.float64 else 1e-4)
    experts = [g for g in result.groups if g.rsplit(".", 1)[-1].isdigit() and "experts" in g]
    if stacked and not any(name.startswith(path + ".") for name in stacked for path in merged):
        with EffectProbe(model, granularity="module") as probe:
            experts = [g for g in probe.measure(direction, make_batch(3, 10)).groups
                       if g.rsplit(".", 1)[-1].isdigit()]
        assert experts, f"{family}: fused experts {stacked[:2]} have no per-expert columns"


def test_per_expert_breakdown_with_gradient_effect(assert_rel_close):
    model = make_moe("qwen2_moe")
    batch, direction = make_batch(4, 12, "left"), random_direction(model)
    frame = gradient_effect(model, direction, batch, by=("instance", "module"))
    experts = frame[frame.module.str.match(r"block\.\d+\.mlp\.experts\.\d+$")]
    assert sorted(experts.module.unique()) == [f"block.{b}.mlp.experts.{e}" for b in range(2) for e in range(4)]
    assert experts.value.abs().groupby(experts.module).max().min() > 0  # every expert was routed to
    for name in ("mlp.gate", "mlp.shared_expert.down_proj", "mlp.shared_expert_gate"):
        assert (frame.module == f"block.1.{name}").any()
    oracle = oracle_effects(model, direction, batch, granularity="module").to_frame()
    merged = frame.merge(oracle, on=["instance", "layer", "module"], suffixes=("", "_oracle"))
    assert len(merged) == len(frame) == len(oracle)
    assert_rel_close(merged.value.to_numpy(), merged.value_oracle.to_numpy(), 1e-6)
    # the experts of a layer sum to the layer's expert effect at layer granularity
    layers = gradient_effect(model, direction, batch, by=("instance", "layer"))
    summed = frame.groupby(["instance", "layer"], sort=False).value.sum().reset_index()
    assert_rel_close(summed.value.to_numpy(), layers.value.to_numpy(), 1e-9)


def test_fused_kernel_models_use_the_reference_forward(assert_rel_close):
    """A float32 model on the default (grouped_mm) experts kernel: same effects as the eager one."""
    model = make_moe("mixtral", torch.float32)
    batch, direction = make_batch(3, 10, "left"), random_direction(model)
    with EffectProbe(model, granularity="module") as probe:
        eager = probe.measure(direction, batch)
    model.set_experts_implementation("grouped_mm")
    with EffectProbe(model, granularity="module") as probe:
        fused = probe.measure(direction, batch)
    assert model.config._experts_implementation == "grouped_mm"
    assert_rel_close(fused.values, eager.values, 1e-4)
    tokens = token_effect(model, direction, batch, granularity="layer")
    assert model.config._experts_implementation == "grouped_mm"  # restored after the eager switch
    reference = oracle_token_effects(model, direction, batch)
    assert_rel_close(tokens.value.to_numpy(), reference.value.to_numpy(), 1e-4)


class Saturating(nn.Module):
    """Fused experts whose output is not a sum over routed experts (tanh of the sum)."""

    def __init__(self, hidden: int = 16, count: int = 4):
        super().__init__()
        self.num_experts = count
        self.weight = nn.Parameter(torch.randn(count, hidden, hidden, dtype=torch.float64) / 4)

    def forward(self, hidden_states, top_k_index, top_k_weights):
        out = torch.zeros_like(hidden_states)
        for k in range(top_k_index.shape[1]):
            picked = self.weight[top_k_index[:, k]]
            out = out + top_k_weights[:, k, None] * torch.bmm(picked, hidden_states.unsqueeze(-1)).squeeze(-1)
        return torch.tanh(out)


def test_non_additive_experts_get_the_exact_per_expert_fallback(assert_rel_close):
    model = make_moe("mixtral")
    for layer in model.model.layers:
        layer.mlp.experts = Saturating()
    assert all(site.parts for site in find_sites(model) if site.path.endswith("experts"))
    batch, direction = make_batch(3, 10, "left"), random_direction(model)
    with EffectProbe(model, granularity="module") as probe:
        result = probe.measure(direction, batch)
        assert probe.rules[[s.path for s in probe.sites].index("model.layers.0.mlp.experts")].additive is False
    oracle = oracle_effects(model, direction, batch, granularity="module")
    assert result.groups == oracle.groups
    assert_rel_close(result.values, oracle.values, 1e-6)  # the router's softmax runs in float32


def test_pairwise_refuses_token_rows():
    from geffect.effects import pairwise_effect

    model = make_moe("mixtral")
    batch = make_batch(2, 8)
    with pytest.raises(NotImplementedError, match="mixture-of-experts"):
        pairwise_effect(model, lambda m, b: m(**{k: b[k] for k in ("input_ids", "attention_mask")}).logits.sum((1, 2)),
                        batch, batch)
