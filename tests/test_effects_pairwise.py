"""Pairwise forget × probe effects against stored per-instance full gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from toy_models import make_batch, make_model

import geffect.effects.rules as rules
from geffect.effects import EffectProbe, oracle_pairwise, pairwise_effect

CASES = [("llama", False), ("gpt2", False), ("neox", False), ("llama", True), ("gpt2", True)]


def negative_nll(model, batch):
    """Gradient-ascent-style per-instance loss: minus the mean label NLL of each forget instance."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    return -(nll.sum(1) / (labels != -100).sum(1))


ROUTED = [(arch, lora, "auto") for arch, lora in CASES] + [
    (arch, lora, route) for arch, lora in [("gpt2", False), ("llama", True)] for route in ("gram", "dense")]
_oracles: dict = {}


@pytest.mark.parametrize("arch,lora,route", ROUTED, ids=[f"{a}{'-lora' if lo else ''}-{r}" for a, lo, r in ROUTED])
def test_matches_oracle(arch, lora, route, monkeypatch, assert_rel_close):
    monkeypatch.setattr(rules, "PAIR_ROUTE", route)
    if route != "auto":
        monkeypatch.setattr(rules, "PAIR_BUDGET", 50)  # force sliced / chunked contractions
    model = make_model(arch, torch.float64, lora=lora)
    forget, probe = make_batch(3, 10, "right", seed=3), make_batch(4, 12, "left", seed=4)
    result = pairwise_effect(model, negative_nll, forget, probe)
    if (arch, lora) not in _oracles:
        _oracles[arch, lora] = oracle_pairwise(model, negative_nll, forget, probe)
    expected = _oracles[arch, lora]
    assert result.values.shape == expected.shape == (3, 4, len(result.groups))
    # non-trivial: embeddings of instances without a shared token are legitimately 0
    assert (result.values != 0).double().mean() > 0.9
    assert_rel_close(result.values, expected, 1e-6)


def test_float32_and_module_granularity(assert_rel_close):
    model = make_model("gpt2", torch.float32)
    forget, probe = make_batch(3, 10, "right", seed=3), make_batch(4, 12, "left", seed=4)
    result = pairwise_effect(model, negative_nll, forget, probe, granularity="module", chunk_size=3)
    expected = oracle_pairwise(model, negative_nll, forget, probe, granularity="module")
    assert_rel_close(result.values, expected, 1e-4)
    frame = result.to_frame()
    assert list(frame.columns) == ["forget", "instance", "layer", "module", "value"]
    assert len(frame) == 3 * 4 * len(result.groups)
    row = frame.iloc[len(result.groups) + 1]  # forget 0, instance 1, second module
    assert (row.forget, row.instance, row.module) == (0, 1, result.groups[1])
    assert row.value == result.values[0, 1, 1].item()


def test_mean_over_forget_is_the_g_effect_of_the_mean_loss(assert_rel_close):
    model = make_model("llama", torch.float64)
    forget, probe = make_batch(3, 10, "right", seed=3), make_batch(4, 12, "right", seed=4)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(negative_nll(model, forget).mean(), list(params.values()))
    with EffectProbe(model) as meter:
        effect = meter.measure(dict(zip(params, grads)), probe)
    pairs = pairwise_effect(model, negative_nll, forget, probe)
    assert_rel_close(pairs.values.mean(0), effect.values, 1e-6)  # Llama norms run in float32


def test_loss_fn_must_return_per_instance_losses():
    model = make_model("llama", torch.float64)
    batch = make_batch(2, 8, "right")
    with pytest.raises(TypeError, match="per-forget-instance"):
        pairwise_effect(model, lambda m, b: negative_nll(m, b).mean(), batch, batch)
