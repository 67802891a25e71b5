"""EffectProbe / gradient_effect against the brute-force oracle on tiny random models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from toy_models import VOCAB, UnigramStub, make_batch, make_model, random_direction

from geffect.effects import EffectProbe, gradient_effect, oracle_effects, runtime
from geffect.effects.batch import prepare_batch
from geffect.effects.runtime import takes_label_mask

CASES = [("llama", False), ("gpt2", False), ("neox", False), ("llama", True), ("gpt2", True)]
TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4}
_cache: dict = {}


def case(arch: str, lora: bool, dtype: torch.dtype, side: str):
    """Model, batch, direction and the module-level oracle, built once per parameter set."""
    key = (arch, lora, dtype, side)
    if key not in _cache:
        model = make_model(arch, dtype, lora=lora)
        batch = make_batch(4, 12, side)
        direction = random_direction(model)
        _cache[key] = (model, batch, direction, oracle_effects(model, direction, batch, granularity="module"))
    return _cache[key]


def to_layers(result) -> tuple[list[str], torch.Tensor]:
    """Sum module columns into their layer groups (order of first appearance)."""
    layers = list(dict.fromkeys(result.layers))
    values = torch.stack([result.values[:, [g == layer for g in result.layers]].sum(1) for layer in layers], 1)
    return layers, values


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("arch,lora", CASES, ids=[f"{a}{'-lora' if lo else ''}" for a, lo in CASES])
def test_matches_oracle_per_instance_and_group(arch, lora, dtype, side, assert_rel_close):
    model, batch, direction, oracle = case(arch, lora, dtype, side)
    with EffectProbe(model) as probe:
        result = probe.measure(direction, batch)
    layers, expected = to_layers(oracle)
    assert result.groups == layers
    assert result.values.dtype == torch.float64 and result.values.shape == (4, len(layers))
    assert result.values.abs().min() > 0  # every group of every instance is actually moved
    assert_rel_close(result.values, expected, TOLERANCE[dtype])
    assert_rel_close(result.risks, oracle.risks, TOLERANCE[dtype])
    # a perturbed direction gives a different answer (the comparison above could fail)
    perturbed = {n: t * (1 + 0.5 * (k % 2)) for k, (n, t) in enumerate(direction.items())}
    with EffectProbe(model) as probe:
        assert not torch.allclose(probe.measure(perturbed, batch).values, result.values, rtol=1e-3)


@pytest.mark.parametrize("arch,lora", CASES, ids=[f"{a}{'-lora' if lo else ''}" for a, lo in CASES])
def test_head_sees_only_label_rows_and_agrees_with_the_per_row_layout(arch, lora, monkeypatch, assert_rel_close):
    """A model that takes a boolean ``logits_to_keep`` gets its head run on the label rows alone
    (one per target, flattened); forcing the per-row layout (B x K positions) gives the same effects."""
    model, batch, direction, _ = case(arch, lora, torch.float64, "left")
    assert takes_label_mask(model) and not takes_label_mask(UnigramStub(VOCAB))
    targets = prepare_batch(batch).rows.numel()
    seen = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    try:
        with EffectProbe(model) as probe:
            flat = probe.measure(direction, batch)
        monkeypatch.setitem(runtime._MASK_SUPPORT, model, False)
        with EffectProbe(model) as probe:
            per_row = probe.measure(direction, batch)
    finally:
        handle.remove()
    hidden = seen[0][-1]
    assert seen[0] == (targets, hidden) and targets < batch["input_ids"].numel()
    assert len(seen[-1]) == 3 and seen[-1][0] == batch["input_ids"].shape[0]  # (B, K, hidden)
    assert_rel_close(flat.values, per_row.values, 1e-10)
    assert_rel_close(flat.risks, per_row.risks, 1e-12)
    assert_rel_close(runtime.probe_risks(model, batch), flat.risks, 1e-12)


@pytest.mark.parametrize("arch,lora", CASES, ids=[f"{a}{'-lora' if lo else ''}" for a, lo in CASES])
def test_module_granularity_matches_oracle_and_sums_to_layers(arch, lora, assert_rel_close):
    model, batch, direction, oracle = case(arch, lora, torch.float64, "left")
    with EffectProbe(model, granularity="module") as probe:
        modules = probe.measure(direction, batch)
    assert modules.groups == oracle.groups
    assert_rel_close(modules.values, oracle.values, 1e-6)
    with EffectProbe(model) as probe:
        layers = probe.measure(direction, batch)
    names, summed = to_layers(modules)
    assert names == layers.groups
    assert_rel_close(summed, layers.values, 1e-12)


def hf_batch_loss(model, batch, reduction):
    """Batch risk from a plain forward: mean of instance means, or the HF token mean (its own loss)."""
    if reduction == "token":
        return model(**batch).loss
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    return (nll.sum(1) / (labels != -100).sum(1)).mean()


@pytest.mark.parametrize("reduction", ["instance", "token"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batch_effect_is_full_gradient_inner_product(arch, reduction, assert_rel_close):
    model = make_model(arch, torch.float64)
    batch = make_batch(5, 12, "right")
    direction = random_direction(model)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(hf_batch_loss(model, batch, reduction), list(params.values()))
    expected = sum((g * direction[n]).sum() for n, g in zip(params, grads))
    with EffectProbe(model, reduction=reduction) as probe:
        result = probe.measure(direction, batch)
    assert_rel_close(result.total().mean(), expected, 1e-6)  # Llama computes norms in float32
    # (Hugging Face's own loss computes the cross-entropy in float32)
    assert_rel_close(result.risks.mean(), hf_batch_loss(model, batch, reduction).detach(), 1e-6)


def test_token_reduction_matches_oracle(assert_rel_close):
    model, batch, direction, _ = case("gpt2", False, torch.float64, "left")
    oracle = oracle_effects(model, direction, batch, reduction="token")
    with EffectProbe(model, reduction="token") as probe:
        result = probe.measure(direction, batch)
    assert_rel_close(result.values, oracle.values, 1e-6)
    with EffectProbe(model) as probe:  # differs from the instance reduction
        assert not torch.allclose(probe.measure(direction, batch).values, result.values, rtol=1e-3)


def test_grad_direction_equals_mapping_and_grad_is_untouched(assert_rel_close):
    model, batch, direction, _ = case("llama", False, torch.float64, "right")
    params = dict(model.named_parameters())
    for name, param in params.items():
        param.grad = direction[name].clone()
    before = {name: param.grad for name, param in params.items()}
    try:
        with EffectProbe(model) as probe:
            from_grad = probe.measure("grad", batch)
            from_mapping = probe.measure(direction, batch)
        assert_rel_close(from_grad.values, from_mapping.values, 0.0)
        for name, param in params.items():
            assert param.grad is before[name] and torch.equal(param.grad, direction[name])
    finally:
        model.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in model.parameters())
    with EffectProbe(model) as probe, pytest.raises(ValueError, match="no trainable parameter has a .grad"):
        probe.measure("grad", batch)


def test_missing_parameters_contribute_zero(assert_rel_close):
    model, batch, direction, _ = case("gpt2", False, torch.float64, "right")
    with EffectProbe(model) as probe:
        full = probe.measure(direction, batch)
        only = probe.measure({n: t for n, t in direction.items() if ".h.0." in n}, batch)
    block0 = full.groups.index("block.0")
    assert_rel_close(only.values[:, block0], full.values[:, block0], 1e-12)
    others = [k for k in range(len(full.groups)) if k != block0]
    assert torch.count_nonzero(only.values[:, others]) == 0


def test_linear_in_direction_and_chunking_is_exact(assert_rel_close):
    model, batch, direction, _ = case("neox", False, torch.float64, "left")
    with EffectProbe(model) as probe:
        whole = probe.measure(direction, batch)
        chunked = probe.measure(direction, batch, chunk_size=3)
        doubled = probe.measure({n: 2 * t for n, t in direction.items()}, batch)
    assert_rel_close(chunked.values, whole.values, 1e-12)
    assert_rel_close(chunked.risks, whole.risks, 1e-12)
    assert_rel_close(doubled.values, 2 * whole.values, 1e-12)


def test_token_reduction_chunks_keep_batch_weights(assert_rel_close):
    model, batch, direction, _ = case("llama", False, torch.float64, "right")
    with EffectProbe(model, reduction="token") as probe:
        assert_rel_close(probe.measure(direction, batch, chunk_size=1).values,
                         probe.measure(direction, batch).values, 1e-12)


def test_instance_without_labels_is_an_error_naming_it():
    model, batch, direction, _ = case("llama", False, torch.float64, "right")
    batch = {k: v.clone() for k, v in batch.items()}
    batch["labels"][2] = -100
    with EffectProbe(model) as probe, pytest.raises(ValueError, match=r"batch index \[2\]"):
        probe.measure(direction, batch)


def test_direction_errors_name_the_parameter():
    model, batch, direction, _ = case("llama", True, torch.float64, "right")
    with EffectProbe(model) as probe:
        with pytest.raises(ValueError, match="'nope.weight' is not a parameter"):
            probe.measure({"nope.weight": torch.zeros(1)}, batch)
        frozen = next(n for n, p in model.named_parameters() if not p.requires_grad)
        with pytest.raises(ValueError, match="frozen parameter"):
            probe.measure({frozen: torch.zeros_like(dict(model.named_parameters())[frozen])}, batch)
        name = next(iter(direction))
        with pytest.raises(ValueError, match="has shape"):
            probe.measure({name: torch.zeros(3)}, batch)


def test_hooks_are_inert_outside_measure_and_removed_on_close():
    model = make_model("gpt2", torch.float64)
    batch = make_batch(3, 10, "right")
    reference = torch.autograd.grad(model(**batch).loss, list(model.parameters()))
    probe = EffectProbe(model)
    model.train()
    probe.measure(random_direction(model), batch)
    assert model.training and all(m.training for m in model.modules())  # mode restored
    model.eval()
    with torch.no_grad():
        model(**batch)  # no-grad forward with hooks present: nothing recorded, nothing fails
    during = torch.autograd.grad(model(**batch).loss, list(model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(reference, during))
    probe.close()
    assert all(not m._forward_hooks for m in model.modules())


def test_autocast_bf16_is_close_to_float32(assert_rel_close):
    model = make_model("llama", torch.float32)
    batch, direction = make_batch(3, 10, "left"), random_direction(model)
    with EffectProbe(model) as probe:
        reference = probe.measure(direction, batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = probe.measure(direction, batch)
    assert_rel_close(low.values, reference.values, 5e-2)


def test_bfloat16_weights_are_close_to_float32(assert_rel_close):
    reference_model, low_model = make_model("gpt2", torch.float32), make_model("gpt2", torch.bfloat16)
    batch, direction = make_batch(3, 10, "left"), random_direction(reference_model)
    with EffectProbe(reference_model) as probe:
        reference = probe.measure(direction, batch)
    with EffectProbe(low_model) as probe:
        low = probe.measure({n: t.bfloat16() for n, t in direction.items()}, batch)
    assert low.values.dtype == torch.float64
    assert_rel_close(low.values, reference.values, 5e-2)


def test_embedding_padding_idx_rows_have_no_effect(assert_rel_close):
    model = make_model("llama", torch.float64)
    batch = make_batch(3, 10, "right")
    model.get_input_embeddings().padding_idx = int(batch["input_ids"][0, 3])  # a real token
    direction = random_direction(model)
    oracle = oracle_effects(model, direction, batch)
    with EffectProbe(model) as probe:
        assert_rel_close(probe.measure(direction, batch).values, oracle.values, 1e-6)


def test_gradient_effect_frame_shapes(assert_rel_close):
    model, batch, direction, oracle = case("llama", False, torch.float64, "right")
    frame = gradient_effect(model, direction, batch)
    assert list(frame.columns) == ["instance", "layer", "value"]
    layers, expected = to_layers(oracle)
    assert frame.layer.tolist() == layers * 4
    assert_rel_close(frame.value.to_numpy().reshape(4, -1), expected, 1e-6)
    per_instance = gradient_effect(model, direction, batch, by=("instance",))
    assert_rel_close(per_instance.value.to_numpy(), expected.sum(1), 1e-6)
    batch_level = gradient_effect(model, direction, batch, by=("layer",))
    assert_rel_close(batch_level.value.to_numpy(), expected.mean(0), 1e-6)
    modules = gradient_effect(model, direction, batch, by=("instance", "module"))
    assert list(modules.columns) == ["instance", "layer", "module", "value"]
    assert_rel_close(modules.value.to_numpy().reshape(4, -1), oracle.values, 1e-6)
    with pytest.raises(ValueError, match="unknown 'by'"):
        gradient_effect(model, direction, batch, by=("instance", "head"))


def test_to_frame_adds_probe_and_step():
    model, batch, direction, _ = case("llama", True, torch.float64, "right")
    with EffectProbe(model) as probe:
        frame = probe.measure(direction, batch).to_frame(probe="forget", step=7)
    assert list(frame.columns) == ["step", "probe", "instance", "layer", "value"]
    assert set(frame.step) == {7} and set(frame.probe) == {"forget"} and len(frame) == 4 * 2
