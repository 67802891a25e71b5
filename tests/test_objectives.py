"""Objectives: hand-computable values, gradient weights, registry behaviour and update signs.

Reference values are computed here independently of ``geffect.objectives.terms``: token
log-probabilities by an explicit loop over positions with ``log_softmax``, hidden states
through ``output_hidden_states``, HF's own ``labels=`` loss for single examples.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from toy_models import make_batch, make_model

import geffect
from geffect.objectives import ObjectiveOutput, describe, get_objective, list_objectives, objective
from geffect.objectives.registry import _REGISTRY
from geffect.objectives.representation import default_layer, steering_vector
from geffect.objectives.terms import hidden_states_at

BUILTINS = ["ga", "gd", "ga_kl", "wga", "idk", "yao", "npo", "npo_gd", "npo_kl", "simnpo", "tnpo",
            "wtnpo", "dpo", "rmu", "rr"]
DECOMPOSABLE = ["ga", "gd", "ga_kl", "wga", "idk", "yao", "npo", "npo_gd", "npo_kl", "simnpo", "tnpo",
                "wtnpo", "dpo", "rmu"]


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def model():
    return make_model("llama", dtype=torch.float64)


@pytest.fixture(scope="module")
def perturbed(model):
    """A copy of the model moved away from it, so that it differs from the reference."""
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return other


@pytest.fixture(scope="module")
def forget():
    batch = make_batch(4, seed=1)
    batch["idk"] = make_batch(4, seed=3)
    batch["mismatch"] = make_batch(4, seed=4)
    return batch


@pytest.fixture(scope="module")
def retain():
    return make_batch(3, seed=2)


def manual_logps(model, batch) -> list[torch.Tensor]:
    """Per instance, the log-probs of its label tokens, by an explicit loop over positions."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    out = []
    for i in range(batch["input_ids"].shape[0]):
        values = []
        for t in range(batch["input_ids"].shape[1] - 1):
            y = int(batch["labels"][i, t + 1])
            if y != -100:
                values.append(torch.log_softmax(logits[i, t], dim=-1)[y])
        out.append(torch.stack(values))
    return out


def mean_nll(model, batch) -> torch.Tensor:
    return torch.stack([-lp.mean() for lp in manual_logps(model, batch)])


def manual_kl(model, ref, batch) -> torch.Tensor:
    logq = torch.log_softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
    with torch.no_grad():
        logp = torch.log_softmax(ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
    kls = []
    for i in range(logq.shape[0]):
        positions = batch["attention_mask"][i].bool()
        kl = (logp[i, positions].exp() * (logp[i, positions] - logq[i, positions])).sum(-1)
        kls.append(kl.mean())
    return torch.stack(kls).mean()


def grads(model, loss) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([g.flatten() for g in _grad_list(loss, params)])


def _grad_list(loss, params) -> list[torch.Tensor]:
    """Gradients of ``loss`` w.r.t. ``params``, zeros for parameters the loss does not use."""
    g = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if x is None else x for p, x in zip(params, g)]


def close(a, b, tol=1e-10):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          atol=tol, rtol=tol)


# ------------------------------------------------------------------------------ likelihood family
def test_ga_is_minus_mean_instance_nll_and_matches_hf_loss(model, forget):
    out = get_objective("ga")(model, forget)
    assert close(out.loss, -mean_nll(model, forget).mean())
    # HF's own loss of a single example is that example's mean token NLL.
    single = {k: v[:1] for k, v in forget.items() if torch.is_tensor(v)}
    hf = model(**single).loss
    assert close(out.per_instance[0], -hf, tol=1e-6)  # HF computes its loss in float32


def test_gd_adds_retain_nll(model, forget, retain):
    out = get_objective("gd")(model, forget, retain=retain, retain_weight=0.3)
    assert close(out.parts["retain"], mean_nll(model, retain).mean())
    assert close(out.loss, -mean_nll(model, forget).mean() + 0.3 * mean_nll(model, retain).mean())


def test_kl_term_zero_at_reference_and_manual_otherwise(model, perturbed, forget, retain):
    ref = copy.deepcopy(model)
    at_ref = get_objective("ga_kl")(model, forget, retain=retain, ref_model=ref)
    assert close(at_ref.parts["kl"], 0.0)
    away = get_objective("ga_kl")(perturbed, forget, retain=retain, ref_model=ref, kl_weight=2.0)
    expected_kl = manual_kl(perturbed, ref, retain)
    assert float(expected_kl.detach()) > 1e-4
    assert close(away.parts["kl"], expected_kl)
    assert close(away.loss, -mean_nll(perturbed, forget).mean() + 2.0 * expected_kl)


def test_wga_alpha_zero_equals_ga_value_and_gradient(model, forget):
    wga = get_objective("wga")(model, forget, alpha=0.0)
    ga = get_objective("ga")(model, forget)
    assert close(wga.loss, ga.loss)
    assert close(grads(model, wga.loss), grads(model, ga.loss))
    assert close(wga.parts["token_weight"], 1.0)


def test_wga_weights_are_detached_token_probabilities(perturbed, forget):
    alpha = 1.7
    out = get_objective("wga")(perturbed, forget, alpha=alpha)
    logps = manual_logps(perturbed, forget)
    expected = torch.stack([(lp.detach().exp() ** alpha * lp).mean() for lp in logps]).mean()
    assert close(out.loss, expected)
    assert close(grads(perturbed, out.loss), grads(perturbed, expected))
    all_lp = torch.cat(logps).detach()
    assert close(out.parts["token_weight"], (all_lp.exp() ** alpha).mean())


def test_idk_forget_term_is_refusal_nll(model, forget, retain):
    out = get_objective("idk")(model, forget, retain=retain)
    assert close(out.parts["forget"], mean_nll(model, forget["idk"]).mean())
    assert close(out.loss, mean_nll(model, forget["idk"]).mean() + mean_nll(model, retain).mean())


def test_yao_combines_ga_mismatch_and_kl(perturbed, model, forget, retain):
    ref = copy.deepcopy(model)
    out = get_objective("yao")(perturbed, forget, retain=retain, ref_model=ref)
    expected = (0.5 * -mean_nll(perturbed, forget).mean() + 1.0 * mean_nll(perturbed, forget["mismatch"]).mean()
                + 1.0 * manual_kl(perturbed, ref, retain))
    assert close(out.loss, expected)
    assert close(get_objective("yao")(model, forget, retain=retain, ref_model=ref).parts["kl"], 0.0)


# ------------------------------------------------------------------------------ preference family
@pytest.mark.parametrize("name", ["npo", "tnpo", "dpo"])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_preference_losses_equal_2_over_beta_log2_at_reference(model, forget, name, beta):
    out = get_objective(name)(model, forget, ref_model=copy.deepcopy(model), beta=beta)
    assert close(out.loss, 2.0 / beta * math.log(2.0))
    weight_key = {"npo": "npo_weight", "tnpo": "token_weight", "dpo": "dpo_weight"}[name]
    assert close(out.parts[weight_key], 1.0)


def test_npo_manual_value_and_gradient_weight(perturbed, model, forget):
    beta = 0.1
    out = get_objective("npo")(perturbed, forget, ref_model=model, beta=beta)
    seq = torch.stack([lp.sum() for lp in manual_logps(perturbed, forget)])
    with torch.no_grad():
        seq_ref = torch.stack([lp.sum() for lp in manual_logps(model, forget)])
    ratio = torch.exp(seq - seq_ref)
    expected = (2 / beta * torch.log1p(ratio ** beta)).mean()
    assert close(out.loss, expected)
    # NPO's gradient = GA gradient reweighted by 2 π^β / (π^β + π_ref^β) per instance.
    weight = (2 * torch.exp(beta * seq) / (torch.exp(beta * seq) + torch.exp(beta * seq_ref))).detach()
    surrogate = (weight * seq).mean()
    assert close(grads(perturbed, out.loss), grads(perturbed, surrogate), tol=1e-8)
    assert close(out.parts["npo_weight"], weight.mean())


def test_npo_retain_variants(perturbed, model, forget, retain):
    base = get_objective("npo")(perturbed, forget, ref_model=model)
    gd = get_objective("npo_gd")(perturbed, forget, retain=retain, ref_model=model, retain_weight=0.5)
    kl = get_objective("npo_kl")(perturbed, forget, retain=retain, ref_model=model)
    assert close(gd.loss, base.loss + 0.5 * mean_nll(perturbed, retain).mean())
    assert close(kl.loss, base.loss + manual_kl(perturbed, model, retain))


@pytest.mark.parametrize("beta,gamma", [(2.5, 0.0), (1.0, 3.0)])
def test_simnpo_manual(model, forget, beta, gamma):
    out = get_objective("simnpo")(model, forget, beta=beta, gamma=gamma)
    logps = manual_logps(model, forget)
    # -(2/β) log σ(-(β/|y|) log π(y|x) - γ)
    expected = torch.stack([-(2 / beta) * torch.nn.functional.logsigmoid(-(beta / len(lp)) * lp.sum() - gamma)
                            for lp in logps]).mean()
    assert close(out.loss, expected)


def test_tnpo_token_weights_match_paper_form(perturbed, model, forget):
    beta = 0.1
    out = get_objective("tnpo")(perturbed, forget, ref_model=model, beta=beta)
    logps = manual_logps(perturbed, forget)
    with torch.no_grad():
        ref_logps = manual_logps(model, forget)
    # Paper's token weight: 2 p^β / (p^β + p_ref^β); gradient = mean_t w_t ∇log p_t.
    weights = [(2 * lp.exp() ** beta / (lp.exp() ** beta + rp.exp() ** beta)).detach()
               for lp, rp in zip(logps, ref_logps)]
    surrogate = torch.stack([(w * lp).mean() for w, lp in zip(weights, logps)]).mean()
    assert close(grads(perturbed, out.loss), grads(perturbed, surrogate), tol=1e-8)
    assert close(out.parts["token_weight"], torch.cat(weights).mean())
    expected = torch.stack([(2 / beta * torch.log1p((lp - rp).exp() ** beta)).mean()
                            for lp, rp in zip(logps, ref_logps)]).mean()
    assert close(out.loss, expected)


def test_wtnpo_gradient_matches_weighted_token_npo(perturbed, model, forget):
    beta, alpha = 0.1, 0.8
    out = get_objective("wtnpo")(perturbed, forget, ref_model=model, beta=beta, alpha=alpha)
    logps = manual_logps(perturbed, forget)
    with torch.no_grad():
        ref_logps = manual_logps(model, forget)
    # Authors' form: w_t = 2 p^(β+α) / (p^β + p_ref^β).
    weights = [(2 * lp.exp() ** (beta + alpha) / (lp.exp() ** beta + rp.exp() ** beta)).detach()
               for lp, rp in zip(logps, ref_logps)]
    surrogate = torch.stack([(w * lp).mean() for w, lp in zip(weights, logps)]).mean()
    assert close(grads(perturbed, out.loss), grads(perturbed, surrogate), tol=1e-8)
    assert close(out.parts["token_weight"], torch.cat(weights).mean())
    tnpo = get_objective("tnpo")(perturbed, forget, ref_model=model, beta=beta)
    assert close(get_objective("wtnpo")(perturbed, forget, ref_model=model, beta=beta, alpha=0.0).loss, tnpo.loss)


def test_dpo_manual(perturbed, model, forget):
    beta = 0.1
    out = get_objective("dpo")(perturbed, forget, ref_model=model, beta=beta)

    def seq(m, b):
        return torch.stack([lp.sum() for lp in manual_logps(m, b)])

    with torch.no_grad():
        ref_w, ref_l = seq(model, forget["idk"]), seq(model, forget)
    margin = (seq(perturbed, forget["idk"]) - ref_w) - (seq(perturbed, forget) - ref_l)
    expected = (-(2 / beta) * torch.nn.functional.logsigmoid(beta * margin)).mean()
    assert close(out.loss, expected)


# ------------------------------------------------------------------------------ representation family
@pytest.mark.parametrize("arch", ["llama", "gpt2", "neox"])
def test_hidden_states_at_is_block_output(arch):
    m = make_model(arch, dtype=torch.float64)
    batch = make_batch(2, seed=5)
    states = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
               output_hidden_states=True).hidden_states
    assert torch.allclose(hidden_states_at(m, batch, 0), states[1])


def test_rmu_forget_term_manual_and_retain_zero_at_reference(model, forget, retain):
    layer, c = 0, 3.0
    out = get_objective("rmu")(model, forget, retain=retain, ref_model=copy.deepcopy(model), layer=layer,
                               steering_coeff=c, seed=11)
    hidden = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"],
                   output_hidden_states=True).hidden_states[layer + 1]
    gen = torch.Generator().manual_seed(11)
    u = torch.rand(hidden.shape[-1], generator=gen, dtype=torch.float64)
    target = c * u / u.norm()
    per = []
    for i in range(hidden.shape[0]):
        # answer positions: those whose next token is a label
        positions = [t for t in range(hidden.shape[1] - 1) if forget["labels"][i, t + 1] != -100]
        per.append(torch.stack([((hidden[i, t] - target) ** 2).mean() for t in positions]).mean())
    assert close(out.per_instance, torch.stack(per))
    assert close(out.parts["retain"], 0.0)
    assert close(out.loss, torch.stack(per).mean())
    assert close(steering_vector(16, seed=11, dtype=torch.float64).norm(), 1.0)


def test_rr_zero_at_reference_and_manual_away(model, perturbed, forget, retain):
    ref = copy.deepcopy(model)
    assert close(get_objective("rr")(model, forget, retain=retain, ref_model=ref, layer=1).loss, 0.0)
    out = get_objective("rr")(perturbed, forget, retain=retain, ref_model=ref, layer=0, tokens="all", weight=2.0)

    def states(m):
        return m(input_ids=retain["input_ids"], attention_mask=retain["attention_mask"],
                 output_hidden_states=True).hidden_states[1]

    diff = ((states(perturbed) - states(ref).detach()) ** 2).mean(-1)
    mask = retain["attention_mask"].bool()
    expected = torch.stack([diff[i][mask[i]].mean() for i in range(diff.shape[0])]).mean()
    assert close(out.parts["retain"], expected)
    assert close(out.loss, 2.0 * expected)


@pytest.mark.parametrize("arch,expected", [("llama", "mlp.down_proj"), ("gpt2", "mlp.c_proj"),
                                           ("neox", "mlp.dense_4h_to_h")])
def test_rmu_trainable_hint_is_mlp_output_projection_of_blocks_up_to_layer(arch, expected):
    m = make_model(arch, dtype=torch.float64)
    names = get_objective("rmu").trainable_parameters(m, layer=1)
    assert names and all(expected in n for n in names)
    assert {n.split(".mlp.")[0][-1] for n in names} == {"0", "1"}  # blocks ℓ-2..ℓ clipped at 0
    assert get_objective("ga").trainable_parameters(m) is None


def test_default_layer_follows_paper_relative_depth(model):
    assert default_layer(model) == 0  # round(7/32 * 2)


# ------------------------------------------------------------------------------ shared properties
@pytest.mark.parametrize("name", DECOMPOSABLE)
def test_per_instance_mean_is_forget_part(perturbed, model, forget, retain, name):
    out = get_objective(name)(perturbed, forget, retain=retain, ref_model=model)
    assert out.per_instance is not None and out.per_instance.shape == (4,)
    assert close(out.per_instance.mean(), out.parts["forget"])


def normalized_step(model, loss, lr):
    params = [p for p in model.parameters() if p.requires_grad]
    g = _grad_list(loss, params)
    norm = torch.sqrt(sum((x ** 2).sum() for x in g))
    assert norm > 0, "objective has a zero gradient"
    with torch.no_grad():
        for p, x in zip(params, g):
            p.sub_(lr * x / norm)


@pytest.mark.parametrize("name", [n for n in BUILTINS if n not in ("rmu", "rr")])
def test_one_sgd_step_raises_forget_nll(name, forget, retain):
    """From θ = θ_ref, a small (normalised) gradient step increases the forget NLL."""
    model = make_model("llama", dtype=torch.float64)
    ref = copy.deepcopy(model)
    before = mean_nll(model, forget).mean().detach()
    out = get_objective(name)(model, forget, retain=retain, ref_model=ref)
    normalized_step(model, out.loss, lr=1e-3)
    after = mean_nll(model, forget).mean().detach()
    assert after > before, f"{name}: forget NLL {float(before):.6f} -> {float(after):.6f}"


def test_one_sgd_step_lowers_rmu_forget_term(forget, retain):
    """RMU acts on block activations, not on the likelihood, so its own forget term is checked."""
    model = make_model("llama", dtype=torch.float64)
    ref = copy.deepcopy(model)
    spec = get_objective("rmu")
    before = spec(model, forget, retain=retain, ref_model=ref)
    normalized_step(model, before.loss, lr=1e-3)
    after = spec(model, forget, retain=retain, ref_model=ref)
    assert after.parts["forget"] < before.parts["forget"]


def test_rr_gradient_zero_at_reference_and_step_reduces_drift(perturbed, model, forget, retain):
    ref = copy.deepcopy(model)
    spec = get_objective("rr")
    g = grads(model, spec(model, forget, retain=retain, ref_model=ref).loss)
    assert float(g.abs().max()) == 0.0
    drifted = copy.deepcopy(perturbed)
    before = spec(drifted, forget, retain=retain, ref_model=ref)
    normalized_step(drifted, before.loss, lr=1e-3)
    assert spec(drifted, forget, retain=retain, ref_model=ref).loss < before.loss


# ------------------------------------------------------------------------------ registry
def test_builtins_registered_with_formula_and_paper():
    assert set(BUILTINS) <= set(list_objectives())
    for name in BUILTINS:
        spec = get_objective(name)
        assert spec.formula.startswith("L =") and spec.paper, name
        text = describe(name)
        assert spec.formula in text and spec.paper in text


def test_signature_introspection_of_builtins():
    npo_gd = get_objective("npo_gd")
    assert npo_gd.uses_retain and npo_gd.uses_ref_model and dict(npo_gd.defaults) == {"beta": 0.1, "retain_weight": 1.0}
    assert not get_objective("ga").uses_retain and not get_objective("ga").uses_ref_model
    assert get_objective("simnpo").defaults == {"beta": 2.5, "gamma": 0.0}
    assert get_objective("dpo").needs == ("idk",) and get_objective("yao").needs == ("mismatch",)
    assert get_objective("rmu").trainable is not None


def test_custom_objective_via_decorator(model, forget, retain):
    calls = {}

    @geffect.objective("test_custom_loss", formula="L = scale·E_r[NLL]", needs=("idk",))
    def custom(model, forget, retain, scale=2.0):
        calls["got_retain"] = retain is not None
        loss = scale * mean_nll(model, retain).mean()
        return ObjectiveOutput(loss=loss, parts={"retain": loss / scale})

    try:
        spec = get_objective("test_custom_loss")
        assert spec.fn is custom and spec.uses_retain and not spec.uses_ref_model
        assert spec.defaults == {"scale": 2.0} and spec.needs == ("idk",)
        out = spec(model, forget, retain=retain, ref_model=model, scale=3.0)  # ref_model not passed on
        assert calls["got_retain"] and close(out.loss, 3.0 * mean_nll(model, retain).mean())
        assert "test_custom_loss" in list_objectives()
        with pytest.raises(TypeError, match="no hyper-parameter"):
            spec(model, forget, retain=retain, sclae=1.0)
        with pytest.raises(ValueError, match="needs a retain batch"):
            spec(model, forget)
        with pytest.raises(KeyError, match="forget\\['idk'\\]"):
            spec(model, {k: v for k, v in forget.items() if k != "idk"}, retain=retain)
        with pytest.raises(ValueError, match="already registered"):
            objective("test_custom_loss")(lambda model, forget: None)
    finally:
        _REGISTRY.pop("test_custom_loss", None)


def test_registration_errors_and_unknown_name():
    with pytest.raises(TypeError, match="needs a default"):
        objective("test_bad")(lambda model, forget, beta: None)
    with pytest.raises(TypeError, match=r"\(model, forget\)"):
        objective("test_bad")(lambda forget, model: None)
    with pytest.raises(KeyError) as err:
        get_objective("nope")
    assert "known objectives" in str(err.value) and "npo" in str(err.value)
    assert "test_bad" not in list_objectives()


def test_missing_reference_model_is_a_clear_error(model, forget):
    with pytest.raises(ValueError, match="reference model"):
        get_objective("npo")(model, forget)


def test_bare_decorator_uses_function_name(model, forget):
    @objective
    def test_bare_objective(model, forget):
        loss = mean_nll(model, forget).mean()
        return ObjectiveOutput(loss=loss)

    try:
        assert get_objective("test_bare_objective").fn is test_bare_objective
    finally:
        _REGISTRY.pop("test_bare_objective", None)
