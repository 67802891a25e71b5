"""cosine_rmu, meta_cosine_rmu and probe_directions: each formula checked on hand-built tensors and
against an independent computation on a toy model (hidden states through ``output_hidden_states``,
positions by an explicit loop), plus the logistic probe fit against scipy."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from toy_models import make_batch, make_model, perturbed_copy

from geffect.objectives import describe, get_objective, list_objectives
from geffect.objectives.probe_directions import (
    FORMS,
    ProbeDirections,
    fit_logistic,
    fit_probe_directions,
    probe_layers,
)
from geffect.objectives.representation import cosine_distance, steering_vector


def close(a, b, tol=1e-10):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          atol=tol, rtol=tol)


@pytest.fixture(scope="module")
def model():
    return make_model("llama", dtype=torch.float64)


@pytest.fixture(scope="module")
def perturbed(model):
    """Moved away from ``model``, which serves as the reference."""
    return perturbed_copy(model)


@pytest.fixture(scope="module")
def forget():
    return make_batch(4, seed=1)


@pytest.fixture(scope="module")
def retain():
    return make_batch(3, seed=2)


def block_output(model, batch, layer):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 output_hidden_states=True).hidden_states[layer + 1]


def answer_positions(batch, i):
    return [t for t in range(batch["input_ids"].shape[1] - 1) if batch["labels"][i, t + 1] != -100]


# ------------------------------------------------------------------------------ hand-built tensors
def test_cosine_distance_on_hand_built_vectors():
    h = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]]])
    u = torch.tensor([1.0, 0.0])
    assert close(cosine_distance(h, u), [[0.0, 1.0, 2.0, 1 - 1 / math.sqrt(2)]], 1e-7)
    # per-position targets, and invariance to the scale of either side
    target = torch.tensor([[[2.0, 0.0], [0.0, -1.0], [-1.0, 0.0], [5.0, 5.0]]])
    assert close(cosine_distance(h, target), [[0.0, 2.0, 0.0, 0.0]], 1e-7)
    assert close(cosine_distance(7.0 * h, u), cosine_distance(h, u), 1e-6)


def test_probe_forms_on_hand_built_tensors():
    h = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])
    w, b = torch.tensor([2.0, 0.0]), torch.tensor(-1.0)
    assert close(FORMS["erase"](h, w, b), [[9.0, 1.0]], 1e-7)  # ⟨h, ŵ⟩², ŵ = (1, 0)
    expected = [[math.log1p(math.exp(5.0)), math.log1p(math.exp(1.0))]]  # softplus(⟨h, w⟩ + b)
    assert close(FORMS["flip"](h, w, b), expected, 1e-6)


def test_fit_logistic_matches_scipy_optimum():
    from scipy.optimize import minimize

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1, 3.0, 1.0]) + 2.0
    y = ((x[:, 0] + 0.3 * x[:, 1] + torch.randn(60, generator=gen, dtype=torch.float64)) > 2.5).double()
    l2 = 0.05
    w, b = fit_logistic(x, y, l2=l2)
    mean, scale = x.mean(0).numpy(), x.std(0).numpy()
    z, yn = (x.numpy() - mean) / scale, y.numpy()

    def loss(theta):  # mean BCE + l2/2 ‖w̃‖² on standardised features, written out independently
        logits = z @ theta[:-1] + theta[-1]
        return np.mean(np.logaddexp(0, logits) - yn * logits) + 0.5 * l2 * np.sum(theta[:-1] ** 2)

    best = minimize(loss, np.zeros(6), method="BFGS", options={"gtol": 1e-12}).x
    w_ref = best[:-1] / scale
    b_ref = best[-1] - np.sum(w_ref * mean)
    assert np.allclose(w.numpy(), w_ref, atol=1e-6) and abs(float(b) - b_ref) < 1e-6
    assert float(torch.linalg.vector_norm(w)) > 0.1


def test_fit_logistic_rejects_one_class():
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic(torch.randn(4, 2), torch.ones(4))


# ------------------------------------------------------------------------------ cosine_rmu
def manual_cosine_forget(model, batch, layer, seed):
    hidden = block_output(model, batch, layer)
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(hidden.shape[-1], generator=gen, dtype=torch.float64)
    per = []
    for i in range(hidden.shape[0]):
        values = [1 - torch.dot(hidden[i, t], u) / (hidden[i, t].norm() * u.norm()) for t in answer_positions(batch, i)]
        per.append(torch.stack(values).mean())
    return torch.stack(per)


def test_cosine_rmu_manual_value(model, perturbed, forget, retain):
    ref = copy.deepcopy(model)
    out = get_objective("cosine_rmu")(perturbed, forget, retain=retain, ref_model=ref, layer=0, alpha=3.0, seed=4,
                                      retain_distance="l2")
    expected_forget = manual_cosine_forget(perturbed, forget, 0, seed=4)
    diff = ((block_output(perturbed, retain, 0) - block_output(ref, retain, 0)) ** 2).mean(-1)
    expected_retain = torch.stack([diff[i, answer_positions(retain, i)].mean() for i in range(3)]).mean()
    assert close(out.per_instance, expected_forget)
    assert close(out.parts["forget"], expected_forget.mean())
    assert close(out.parts["retain"], expected_retain) and float(expected_retain.detach()) > 1e-6
    assert close(out.loss, expected_forget.mean() + 3.0 * expected_retain)


def test_cosine_rmu_cosine_retain_option_and_zero_at_reference(model, perturbed, forget, retain):
    ref = copy.deepcopy(model)
    same = get_objective("cosine_rmu")(model, forget, retain=retain, ref_model=ref, retain_distance="cosine")
    assert close(same.parts["retain"], 0.0, 1e-9)
    out = get_objective("cosine_rmu")(perturbed, forget, retain=retain, ref_model=ref, layer=0,
                                      retain_distance="cosine", tokens="all")
    h, g = block_output(perturbed, retain, 0), block_output(ref, retain, 0)
    mask = retain["attention_mask"].bool()
    per = [torch.stack([1 - torch.dot(h[i, t], g[i, t]) / (h[i, t].norm() * g[i, t].norm())
                        for t in range(h.shape[1]) if mask[i, t]]).mean() for i in range(3)]
    assert close(out.parts["retain"], torch.stack(per).mean())
    default = get_objective("cosine_rmu")(perturbed, forget, retain=retain, ref_model=ref, layer=0, tokens="all")
    assert close(default.parts["retain"], out.parts["retain"])  # 1 − cos is the default retain distance
    with pytest.raises(ValueError, match="distance must be one of"):
        get_objective("cosine_rmu")(model, forget, retain=retain, ref_model=ref, retain_distance="l1")


def test_cosine_rmu_is_scale_free_in_its_forget_term(forget):
    """Scaling the embedding (hence every residual activation) leaves 1 − cos unchanged; RMU's term changes."""
    model = make_model("llama", dtype=torch.float64)
    big = copy.deepcopy(model)
    with torch.no_grad():  # Llama blocks are homogeneous in their input up to RMSNorm: scale the stream
        big.model.embed_tokens.weight.mul_(10.0)
        for block in big.model.layers:
            block.self_attn.o_proj.weight.mul_(10.0)
            block.mlp.down_proj.weight.mul_(10.0)
    ref = copy.deepcopy(model)
    small = get_objective("cosine_rmu")(model, forget, retain=forget, ref_model=ref, layer=1)
    large = get_objective("cosine_rmu")(big, forget, retain=forget, ref_model=ref, layer=1)
    assert close(small.parts["forget"], large.parts["forget"], 1e-5)  # RMSNorm's eps: not exactly
    rmu_small = get_objective("rmu")(model, forget, retain=forget, ref_model=ref, layer=1)
    rmu_large = get_objective("rmu")(big, forget, retain=forget, ref_model=ref, layer=1)
    change = abs(float(rmu_large.parts["forget"]) / float(rmu_small.parts["forget"]) - 1)
    assert change > 1e-2  # RMU's squared distance to c·u moves with the activation scale


def test_one_sgd_step_lowers_cosine_forget_term(forget, retain):
    model = make_model("llama", dtype=torch.float64)
    ref = copy.deepcopy(model)
    spec = get_objective("cosine_rmu")
    before = spec(model, forget, retain=retain, ref_model=ref)
    before.loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(1e-2 * p.grad)
    after = spec(model, forget, retain=retain, ref_model=ref)
    assert after.parts["forget"] < before.parts["forget"]


# ------------------------------------------------------------------------------ meta_cosine_rmu
def test_meta_cosine_rmu_weights_its_unweighted_terms(model, perturbed, forget, retain):
    ref = copy.deepcopy(model)
    plain = get_objective("cosine_rmu")(perturbed, forget, retain=retain, ref_model=ref, alpha=1.0)
    meta = get_objective("meta_cosine_rmu")(perturbed, forget, retain=retain, ref_model=ref,
                                            forget_weight=0.3, retain_weight=2.5)
    assert close(meta.parts["forget"], plain.parts["forget"]) and close(meta.parts["retain"], plain.parts["retain"])
    assert close(meta.loss, 0.3 * plain.parts["forget"] + 2.5 * plain.parts["retain"])
    assert close(meta.per_instance.mean(), meta.parts["forget"])
    spec = get_objective("meta_cosine_rmu")
    assert dict(spec.weights) == {"forget": "forget_weight", "retain": "retain_weight"}
    assert spec.companion == "weight_controller" and spec.trainable is get_objective("rmu").trainable


# ------------------------------------------------------------------------------ probe_directions
def hand_probes(model, layers, seed=3):
    gen = torch.Generator().manual_seed(seed)
    size = model.config.hidden_size
    return ProbeDirections(list(layers), torch.randn(len(layers), size, generator=gen, dtype=torch.float64),
                           torch.randn(len(layers), generator=gen, dtype=torch.float64))


@pytest.mark.parametrize("form", ["erase", "flip"])
def test_probe_directions_manual_value(model, forget, retain, form):
    probes = hand_probes(model, [0, 1])
    out = get_objective("probe_directions")(model, forget, retain=retain, ref_model=model, form=form,
                                            layer_weights=[0.25, 2.0], retain_weight=0.5, probes=probes)
    states = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"],
                   output_hidden_states=True).hidden_states
    per = torch.zeros(4, dtype=torch.float64)
    # the last block's output is not hidden_states[-1] (HF applies the final norm there): read it with a hook
    captured = {}
    handle = model.model.layers[1].register_forward_hook(
        lambda module, args, output: captured.setdefault(1, output[0] if isinstance(output, tuple) else output))
    model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"])
    handle.remove()
    blocks = {0: states[1], 1: captured[1]}
    for lam, layer in zip([0.25, 2.0], [0, 1]):
        w, b = probes.weight[layer], probes.bias[layer]
        for i in range(4):
            values = []
            for t in answer_positions(forget, i):
                h = blocks[layer][i, t]
                values.append(torch.dot(h, w / w.norm()) ** 2 if form == "erase"
                              else torch.log1p(torch.exp(torch.dot(h, w) + b)))
            per[i] += lam * torch.stack(values).mean()
    labels = retain["labels"]
    logits = model(input_ids=retain["input_ids"], attention_mask=retain["attention_mask"]).logits
    nll = []
    for i in range(3):
        tokens = [-torch.log_softmax(logits[i, t], -1)[labels[i, t + 1]] for t in answer_positions(retain, i)]
        nll.append(torch.stack(tokens).mean())
    retain_nll = torch.stack(nll).mean()
    assert close(out.per_instance, per, 1e-9)
    assert close(out.parts["retain"], retain_nll, 1e-9)
    assert close(out.loss, per.mean() + 0.5 * retain_nll, 1e-9)
    assert set(out.parts) == {"forget", "retain", "forget_block.0", "forget_block.1"}


def test_probe_directions_single_layer_and_equal_weights(model, forget, retain):
    probes = hand_probes(model, [0, 1])
    spec = get_objective("probe_directions")
    both = spec(model, forget, retain=retain, ref_model=model, probes=probes)
    only = spec(model, forget, retain=retain, ref_model=model, probes=probes, single_layer=1)
    # equal λ summing to one: the multi-layer term is the mean of the per-block terms
    assert close(both.parts["forget"], (both.parts["forget_block.0"] + both.parts["forget_block.1"]) / 2)
    assert close(only.parts["forget"], both.parts["forget_block.1"])
    assert probe_layers(model, "all") == [0, 1] and probe_layers(model, [1, -2]) == [0, 1]
    assert probe_layers(model, "all", single_layer=-1) == [1]
    with pytest.raises(ValueError, match="out of range"):
        probe_layers(model, [5])
    with pytest.raises(KeyError, match="no probe was fitted for block 1"):
        spec(model, forget, retain=retain, ref_model=model, probes=hand_probes(model, [0]), layers=[1])


def test_probe_directions_kl_retain_option(model, perturbed, forget, retain):
    from geffect.objectives import retain_kl

    probes = hand_probes(model, [0, 1])
    out = get_objective("probe_directions")(perturbed, forget, retain=retain, ref_model=model, retain_term="kl",
                                            probes=probes)
    assert close(out.parts["retain"], retain_kl(perturbed, model, retain)) and float(out.parts["retain"]) > 1e-8


def test_probe_directions_fits_on_the_batch_without_probes(model, forget, retain):
    out = get_objective("probe_directions")(model, forget, retain=retain, ref_model=model)
    fitted = fit_probe_directions(model, [forget], [retain], [0, 1], holdout=0.0)
    again = get_objective("probe_directions")(model, forget, retain=retain, ref_model=model, probes=fitted)
    assert close(out.loss, again.loss)


def test_erase_step_lowers_the_toxic_component(forget, retain):
    model = make_model("llama", dtype=torch.float64)
    probes = hand_probes(model, [0, 1])
    spec = get_objective("probe_directions")
    before = spec(model, forget, retain=retain, ref_model=model, probes=probes, retain_weight=0.0)
    before.loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(1e-3 * p.grad)
    after = spec(model, forget, retain=retain, ref_model=model, probes=probes, retain_weight=0.0)
    assert after.parts["forget"] < before.parts["forget"]


def test_fitted_probes_separate_separable_activations(model):
    """Two classes of rows that differ in their tokens: the per-block probes reach full accuracy."""
    low, high = make_batch(12, seed=1, vocab=20), make_batch(12, seed=2, vocab=61)
    high["input_ids"] = torch.where(high["attention_mask"].bool(), high["input_ids"].clamp_min(40), 0)
    high["labels"] = torch.where(high["labels"] == -100, -100, high["input_ids"])
    probes = fit_probe_directions(model, [high], [low], [0, 1], holdout=0.25, l2=1e-2)
    assert probes.weight.shape == (2, model.config.hidden_size)
    for scores in probes.accuracy.values():
        assert scores["train"] == 1.0 and scores["heldout"] == 1.0 and scores["rows"] == 24


def test_probe_directions_save_load_round_trip(tmp_path, model):
    probes = hand_probes(model, [0, 1])
    probes.accuracy = {"block.0": {"train": 0.9, "heldout": 0.8, "rows": 10.0}}
    probes.save(tmp_path / "p")
    loaded = ProbeDirections.load(tmp_path / "p")
    assert loaded.layers == [0, 1] and torch.equal(loaded.weight, probes.weight)
    assert loaded.accuracy == probes.accuracy


# ------------------------------------------------------------------------------ registry / description
def test_registered_and_described_as_interpretations():
    names = list_objectives()
    for name in ("cosine_rmu", "meta_cosine_rmu", "probe_directions"):
        assert name in names
        text = describe(name)
        assert "interpretation" in text and "Atil" in text, name
    assert "weights:  forget × forget_weight, retain × retain_weight" in describe("meta_cosine_rmu")
    assert "weight_controller" in describe("meta_cosine_rmu")
    assert "probe_directions" in get_objective("probe_directions").companion
    assert steering_vector(8).norm() == pytest.approx(1.0)


def test_block_states_stop_the_forward_after_the_deepest_block(model, forget):
    from geffect.objectives.terms import hidden_states_at_blocks

    expected = block_output(model, forget, 0)
    calls = []
    handles = [model.model.layers[1].register_forward_hook(lambda *a: calls.append("block.1")),
               model.lm_head.register_forward_hook(lambda *a: calls.append("lm_head"))]
    try:
        states = hidden_states_at_blocks(model, forget, [0])
        assert calls == [] and set(states) == {0}
        assert torch.allclose(states[0], expected)
        hidden_states_at_blocks(model, forget, [0, 1])
        assert calls == ["block.1"]
    finally:
        for handle in handles:
            handle.remove()


def test_per_instance_g_effects_of_the_stopped_forward_match_the_full_forward_oracle(model, forget, assert_rel_close):
    """The engine's forget × probe effects of the cosine term (read from a forward that stops at block 0)
    equal the brute-force oracle's for the same term read from a full ``output_hidden_states`` pass."""
    from geffect.effects import oracle_pairwise, pairwise_effect
    from geffect.objectives.cosine_rmu import cosine_forget_term

    def full_forward_term(m, batch):
        hidden = block_output(m, batch, 0)
        u = steering_vector(hidden.shape[-1], 0, hidden.dtype)
        mask = batch["attention_mask"].double()
        distance = 1 - torch.nn.functional.cosine_similarity(hidden, u.expand_as(hidden), dim=-1)
        return (distance * mask).sum(1) / mask.sum(1)

    probe = make_batch(3, seed=5)
    result = pairwise_effect(model, lambda m, b: cosine_forget_term(m, b, 0, tokens="all"), forget, probe)
    expected = oracle_pairwise(model, full_forward_term, forget, probe)
    assert (expected != 0).any()
    assert_rel_close(result.values, expected, 1e-8)
