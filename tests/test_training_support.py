"""Shared helpers for the trainer tests (no tests here): a tiny world model and an oracle.

``toy_load`` stands in for ``geffect.models.load``: a 2-block Llama with hidden size 16 over
a small BPE tokenizer trained on the embedded world, so trainer tests take seconds. The
brute-force ``oracle_values`` (one backward per probe instance, full gradients) is the
independent check of recorded G-effects.
"""

from __future__ import annotations

import functools
import re

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from geffect.schema import IGNORE_INDEX


@functools.lru_cache(maxsize=1)
def world_tokenizer():
    from geffect.data import load_world, train_tokenizer, world_texts

    return train_tokenizer(world_texts(load_world()), vocab_size=512)


def toy_model(seed: int = 0) -> LlamaForCausalLM:
    tokenizer = world_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False, attn_implementation="eager",
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    return LlamaForCausalLM(config).eval()


def toy_load(name="toy", device=None, dtype=None, **_):
    """Stand-in for ``geffect.models.load``: the same fresh toy model for every name."""
    model = toy_model()
    if device is not None:
        model = model.to(device)
    return model, world_tokenizer()


def use_toy_model(monkeypatch) -> None:
    import geffect.models

    monkeypatch.setattr(geffect.models, "load", toy_load, raising=False)


def group_of(name: str) -> str:
    """Layer group of a Llama parameter name (the schema's names)."""
    if "embed_tokens" in name:
        return "embed"
    match = re.search(r"layers\.(\d+)\.", name)
    if match:
        return f"block.{match.group(1)}"
    return "lm_head" if "lm_head" in name else "final_norm"


def instance_risk(model, batch, i: int) -> torch.Tensor:
    """R_i with autograd: mean NLL of instance i's label tokens (causal shift)."""
    logits = model(input_ids=batch["input_ids"][i : i + 1], attention_mask=batch["attention_mask"][i : i + 1]).logits
    labels = batch["labels"][i, 1:]
    keep = labels != IGNORE_INDEX
    return torch.nn.functional.cross_entropy(logits[0, :-1][keep].double(), labels[keep])


def oracle_values(model, batch, direction: dict[str, torch.Tensor], groups: list[str]) -> torch.Tensor:
    """e[i,k] = Σ_{params p in group k} <∇_p R_i, direction_p>, by one backward per instance."""
    named = {n: p for n, p in model.named_parameters() if n in direction}
    out = torch.zeros(batch["input_ids"].shape[0], len(groups), dtype=torch.float64)
    for i in range(batch["input_ids"].shape[0]):
        grads = torch.autograd.grad(instance_risk(model, batch, i), list(named.values()), allow_unused=True)
        for (name, _), grad in zip(named.items(), grads):
            if grad is not None:
                out[i, groups.index(group_of(name))] += (grad.double() * direction[name].double()).sum()
    return out


class OracleProbe:
    """Stand-in for ``geffect.effects.EffectProbe`` built on :func:`oracle_values` (slow, obviously exact)."""

    def __init__(self, model, granularity: str = "layer") -> None:
        from geffect.schema import layer_sort_key

        self.model = model
        self.groups = sorted({group_of(n) for n, p in model.named_parameters() if p.requires_grad},
                             key=layer_sort_key)

    def measure(self, direction, batch, chunk_size=None):
        if isinstance(direction, str):
            direction = {n: p.grad for n, p in self.model.named_parameters() if p.grad is not None}
        values = oracle_values(self.model, batch, direction, self.groups)
        with torch.no_grad():
            risks = torch.stack([instance_risk(self.model, batch, i) for i in range(values.shape[0])])
        return type("Result", (), {"values": values, "risks": risks.double(), "groups": self.groups})()

    def close(self) -> None:
        pass


def slow_ga(model, forget):
    """GA that waits $TEST_OBJECTIVE_PAUSE seconds per call, and while the file $TEST_OBJECTIVE_HOLD exists
    (at most 300 s): an importable objective for subprocess runs that must stay alive while a test acts."""
    import os
    import time

    from geffect.objectives import get_objective

    time.sleep(float(os.environ.get("TEST_OBJECTIVE_PAUSE", "0")))
    hold, deadline = os.environ.get("TEST_OBJECTIVE_HOLD"), time.time() + 300
    while hold and os.path.exists(hold) and time.time() < deadline:
        time.sleep(0.05)
    return get_objective("ga")(model, forget)


def install_toy_model() -> None:
    """Make ``geffect.models.load`` return the toy model in this process (subprocess scripts)."""
    import geffect.models

    geffect.models.load = toy_load
