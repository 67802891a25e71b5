"""Several directions in one pass (``measure_many``) and the RMSNorm closed form, against the oracle."""

from __future__ import annotations

import pytest
import torch
from toy_models import make_batch, make_model, random_direction

from geffect.effects import EffectProbe, oracle_effects
from geffect.effects import rules as rules_module
from geffect.effects.rules import GenericRule, RMSNormRule

CASES = [("llama", False), ("gpt2", False), ("neox", False), ("llama", True), ("gpt2", True)]


@pytest.mark.parametrize("route", ["per-instance", "stacked"])
@pytest.mark.parametrize("arch,lora", CASES, ids=[f"{a}{'-lora' if lo else ''}" for a, lo in CASES])
def test_each_direction_matches_its_oracle(arch, lora, route, monkeypatch, assert_rel_close):
    monkeypatch.setattr(rules_module, "MANY_FACTOR", 10**9 if route == "per-instance" else 0)
    model = make_model(arch, torch.float64, lora=lora)
    batch = make_batch(4, 12, "left")
    first, second = random_direction(model, seed=3), random_direction(model, seed=4)
    # a third direction that moves only one block: the others must stay exactly zero for it
    third = random_direction(model, seed=5, only="layers.1." if arch != "gpt2" else "h.1.")
    with EffectProbe(model, granularity="module") as probe:
        many = probe.measure_many({"first": first, "second": second, "third": third}, batch)
    assert list(many) == ["first", "second", "third"]
    for name, direction in (("first", first), ("second", second), ("third", third)):
        oracle = oracle_effects(model, direction, batch, granularity="module")
        assert many[name].groups == oracle.groups
        assert_rel_close(many[name].values, oracle.values, 1e-6)
        assert_rel_close(many[name].risks, oracle.risks, 1e-12)
    assert not torch.allclose(many["first"].values, many["second"].values, rtol=1e-2)
    moved = [k for k, layer in enumerate(many["third"].layers) if layer == "block.1"]
    still = [k for k in range(len(many["third"].groups)) if k not in moved]
    assert many["third"].values[:, moved].abs().sum() > 0
    assert torch.count_nonzero(many["third"].values[:, still]) == 0


def test_many_equals_one_at_a_time_in_float32(assert_rel_close):
    model = make_model("llama", torch.float32)
    batch = make_batch(4, 12, "right")
    directions = {"a": random_direction(model, seed=6), "b": random_direction(model, seed=7)}
    with EffectProbe(model) as probe:
        many = probe.measure_many(directions, batch, chunk_size=3)
        for name, direction in directions.items():
            assert_rel_close(many[name].values, probe.measure(direction, batch).values, 1e-5)


def test_measure_many_rejects_an_empty_mapping():
    model = make_model("llama", torch.float64)
    with EffectProbe(model) as probe, pytest.raises(TypeError, match="non-empty mapping"):
        probe.measure_many({}, make_batch())


class OnePlusRMSNorm(torch.nn.Module):
    """Gemma-style ``(1 + w) ⊙ n(x)``, normalised in the input's own precision."""

    def __init__(self, weight: torch.Tensor, eps: float = 1e-6):
        super().__init__()
        self.weight, self.eps = torch.nn.Parameter(weight.detach().clone() - 1), eps

    def forward(self, x):
        return (1 + self.weight) * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class SquaredRMSNorm(OnePlusRMSNorm):
    """Not affine in its weight (``w² ⊙ n(x)``): no closed form applies, the generic rule must."""

    def forward(self, x):
        return self.weight.pow(2) * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


@pytest.mark.parametrize("norm,recipe", [(None, "float32:scale"), (OnePlusRMSNorm, "native:one_plus"),
                                         (SquaredRMSNorm, "")], ids=["llama", "one-plus", "squared"])
def test_rms_norm_rule_finds_the_form_or_falls_back(norm, recipe, assert_rel_close):
    model = make_model("llama", torch.float64)
    if norm is not None:
        for layer in model.model.layers:
            for name in ("input_layernorm", "post_attention_layernorm"):
                old = getattr(layer, name)
                setattr(layer, name, norm(old.weight, old.variance_epsilon))
        model.model.norm = norm(model.model.norm.weight, model.model.norm.variance_epsilon)
    batch = make_batch(4, 12, "right")
    direction = random_direction(model, seed=8, only="norm")
    with EffectProbe(model, granularity="module") as probe:
        result = probe.measure(direction, batch)
        norm_rules = [rule for rule in probe.rules if isinstance(rule, GenericRule)]
    assert norm_rules and all(isinstance(rule, RMSNormRule) for rule in norm_rules)
    assert {rule.recipe for rule in norm_rules} == {recipe}
    oracle = oracle_effects(model, direction, batch, granularity="module")
    assert result.values.abs().sum() > 0
    assert_rel_close(result.values, oracle.values, 1e-9)


class DropsLogitsToKeep(torch.nn.Module):
    """A wrapper whose forward ignores ``logits_to_keep``: all positions' logits come back."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, logits_to_keep=None, **inputs):
        return self.inner(**inputs)


def test_logits_are_asked_only_where_labels_are_and_a_model_ignoring_that_still_works(assert_rel_close):
    from geffect.effects.batch import prepare_batch

    model = make_model("llama", torch.float64)
    batch = make_batch(4, 12, "left")
    probe = prepare_batch(batch)
    assert probe.keep is not None and probe.keep.shape[1] < 12  # prompts are masked, so fewer positions
    direction = random_direction(model, seed=9)
    oracle = oracle_effects(model, direction, batch)
    with EffectProbe(model) as probe_model:
        asked = probe_model.measure(direction, batch)
    with EffectProbe(DropsLogitsToKeep(model)) as probe_wrapper:
        ignored = probe_wrapper.measure({f"inner.{n}": t for n, t in direction.items()}, batch)
    assert_rel_close(asked.values, oracle.values, 1e-6)
    # (the bare wrapper has no get_input_embeddings, so compare totals over its own groups)
    assert_rel_close(ignored.total(), oracle.values.sum(1), 1e-6)
    assert_rel_close(ignored.risks, oracle.risks, 1e-12)


def test_inputs_made_to_require_grad_do_not_hide_the_network(assert_rel_close):
    """HF's enable_input_require_grads (used with LoRA + checkpointing) makes every site input need grad."""
    model = make_model("llama", torch.float64, lora=True)
    model.enable_input_require_grads()
    batch = make_batch(4, 12, "right")
    direction = random_direction(model, seed=10)
    with EffectProbe(model) as probe:
        result = probe.measure(direction, batch)
    oracle = oracle_effects(model, direction, batch)
    assert result.values.abs().sum() > 0
    assert_rel_close(result.values, oracle.values, 1e-6)


def test_the_graph_is_freed_when_measure_returns():
    """No reference cycle keeps activations alive until a garbage collection (memory would grow per step)."""
    import gc
    import weakref

    model = make_model("llama", torch.float64)
    outputs = []
    handle = model.model.layers[1].mlp.down_proj.register_forward_hook(
        lambda module, args, output: outputs.append(weakref.ref(output)))
    gc.disable()
    try:
        with EffectProbe(model) as probe:
            probe.measure_many({"a": random_direction(model, seed=1), "b": random_direction(model, seed=2)},
                               make_batch())
        assert outputs and all(ref() is None for ref in outputs)
    finally:
        gc.enable()
        handle.remove()
