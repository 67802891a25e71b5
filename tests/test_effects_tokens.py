"""Per-token effects (forward-mode) against the per-token brute-force oracle."""

from __future__ import annotations

import pytest
import torch
from toy_models import make_batch, make_model, random_direction

from geffect.effects import EffectProbe, gradient_effect, oracle_token_effects, token_effect

CASES = [("llama", False), ("gpt2", False), ("neox", False), ("llama", True)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("arch,lora", CASES, ids=[f"{a}{'-lora' if lo else ''}" for a, lo in CASES])
def test_per_token_per_layer_matches_oracle(arch, lora, dtype, assert_rel_close):
    model = make_model(arch, dtype, lora=lora)
    batch, direction = make_batch(2, 10, "left"), random_direction(model)
    oracle = oracle_token_effects(model, direction, batch)
    per_layer = token_effect(model, direction, batch, granularity="layer")
    keys = ["instance", "token", "layer"]
    assert per_layer[keys].values.tolist() == oracle[keys].values.tolist()
    assert per_layer.value.abs().min() > 0
    assert_rel_close(per_layer.value.to_numpy(), oracle.value.to_numpy(), 1e-6 if dtype == torch.float64 else 1e-4)
    total = token_effect(model, direction, batch)
    summed = oracle.groupby(["instance", "token"], sort=True).value.sum()
    assert total[["instance", "token"]].values.tolist() == [list(k) for k in summed.index]
    assert_rel_close(total.value.to_numpy(), summed.to_numpy(), 1e-6 if dtype == torch.float64 else 1e-4)


def test_token_effects_average_to_the_instance_effect(assert_rel_close):
    model = make_model("gpt2", torch.float64)
    batch, direction = make_batch(4, 12, "right"), random_direction(model)
    tokens = token_effect(model, direction, batch)
    with EffectProbe(model) as probe:
        result = probe.measure(direction, batch)
    assert_rel_close(tokens.groupby("instance").value.mean().to_numpy(), result.total(), 1e-9)
    assert_rel_close(tokens.groupby("instance").nll.mean().to_numpy(), result.risks, 1e-9)
    labels = batch["labels"]
    assert tokens.token_id.tolist() == labels[tokens.instance, tokens.token].tolist()
    chunked = token_effect(model, direction, batch, chunk_size=3)
    assert chunked[["instance", "token"]].values.tolist() == tokens[["instance", "token"]].values.tolist()
    assert_rel_close(chunked.value.to_numpy(), tokens.value.to_numpy(), 1e-12)


def test_module_granularity_sums_to_layers(assert_rel_close):
    model = make_model("llama", torch.float64, lora=True)
    batch, direction = make_batch(2, 8, "right"), random_direction(model)
    modules = token_effect(model, direction, batch, granularity="module")
    layers = token_effect(model, direction, batch, granularity="layer")
    summed = modules.groupby(["instance", "token", "layer"], sort=False).value.sum()
    assert_rel_close(summed.to_numpy(), layers.value.to_numpy(), 1e-6)  # Llama: float32 softmax inside
    assert modules.module.str.endswith(("lora_A", "lora_B")).all()


def test_sdpa_model_is_measured_with_eager_attention(assert_rel_close):
    model = make_model("llama", torch.float32)
    batch, direction = make_batch(2, 8, "left"), random_direction(model)
    eager = token_effect(model, direction, batch)
    model.set_attn_implementation("sdpa")
    frame = gradient_effect(model, direction, batch, by=("instance", "token"))
    assert model.config._attn_implementation == "sdpa"  # restored
    assert_rel_close(frame.value.to_numpy(), eager.value.to_numpy(), 1e-5)
