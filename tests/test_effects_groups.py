"""Layer groups from the module tree, the generic rule, and detection of uses no rule covers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from toy_models import make_batch, make_model, random_direction

from geffect.effects import EffectProbe, layer_groups, oracle_effects

LAYERS = ["embed", "block.0", "block.1", "final_norm", "lm_head"]


@pytest.mark.parametrize("arch,embed_modules,head", [
    ("llama", ["model.embed_tokens"], ["lm_head"]),
    ("gpt2", ["transformer.wte", "transformer.wpe"], ["lm_head"]),
    ("neox", ["gpt_neox.embed_in"], ["lm_head"]),
])
def test_layer_groups_of_decoders(arch, embed_modules, head):
    groups = layer_groups(make_model(arch))
    assert list(groups) == LAYERS
    assert groups["embed"] == embed_modules and groups["lm_head"] == head
    for i in (0, 1):
        assert groups[f"block.{i}"] and all(f".{i}." in path for path in groups[f"block.{i}"])
    assert len(groups["final_norm"]) == 1


def test_module_names_of_llama_and_lora():
    names = list(layer_groups(make_model("llama"), "module"))
    assert names[:2] == ["embed.embed_tokens", "block.0.self_attn.q_proj"]
    assert "block.1.mlp.down_proj" in names and names[-2:] == ["final_norm.norm", "lm_head"]
    lora = layer_groups(make_model("llama", lora=True), "module")
    assert list(lora)[:2] == ["block.0.self_attn.q_proj.lora_A", "block.0.self_attn.q_proj.lora_B"]
    assert lora["block.0.self_attn.q_proj.lora_A"] == ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default"]


def test_tied_gpt2_weight_is_in_embed_and_head():
    model = make_model("gpt2")
    assert model.lm_head.weight is model.transformer.wte.weight
    groups = layer_groups(model, "module")
    assert groups["embed.wte"] == ["transformer.wte"] and groups["lm_head"] == ["lm_head"]


def test_phi_and_qwen2_configs_group_like_llama():
    from transformers import PhiConfig, PhiForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    for model in (PhiForCausalLM(PhiConfig(**common)), Qwen2ForCausalLM(Qwen2Config(**common))):
        assert list(layer_groups(model)) == LAYERS


class GatedBlock(nn.Module):
    """A block that owns a raw parameter (``gain``): only the generic rule can handle it."""

    def __init__(self, dim: int):
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        self.gain = nn.Parameter(torch.randn(dim))

    def forward(self, x):
        return x + torch.tanh(self.lin(x)) * self.gain


class TinyLM(nn.Module):
    """Token-wise toy LM with the Hugging Face call convention; ``mode`` plants unsupported uses."""

    def __init__(self, vocab: int = 30, dim: int = 8, mode: str = "plain"):
        super().__init__()
        self.mode = mode
        self.embed = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(GatedBlock(dim) for _ in range(2))
        self.head = nn.Linear(dim, vocab)
        self.double()

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
        h = self.embed(input_ids)
        for layer in self.layers:
            h = layer(h)
        if self.mode == "functional_tie":  # the embedding matrix reused without a module call
            return SimpleNamespace(logits=self.head(h) + F.linear(h, self.embed.weight))
        if self.mode == "bypass":  # the head's weight used, its forward never called
            return SimpleNamespace(logits=F.linear(h, self.head.weight, self.head.bias))
        return SimpleNamespace(logits=self.head(h))


def test_generic_rule_on_a_custom_module(assert_rel_close):
    model = TinyLM()
    batch = make_batch(3, 9, "left", vocab=30)
    direction = random_direction(model)
    with EffectProbe(model, granularity="module") as probe:
        result = probe.measure(direction, batch)
    assert "block.0" in result.groups and "block.0.lin" in result.groups  # gain lives on the block
    oracle = oracle_effects(model, direction, batch, granularity="module")
    assert result.groups == oracle.groups
    assert result.values[:, result.groups.index("block.1")].abs().min() > 0
    assert_rel_close(result.values, oracle.values, 1e-9)


@pytest.mark.parametrize("mode", ["functional_tie", "bypass"])
def test_uses_outside_module_forward_are_errors(mode):
    model = TinyLM(mode=mode)
    batch = make_batch(2, 6, "right", vocab=30)
    name = "embed.weight" if mode == "functional_tie" else "head.weight"
    with EffectProbe(model) as probe, pytest.raises(RuntimeError, match=f"parameter '{name}'"):
        probe.measure(random_direction(model), batch)
