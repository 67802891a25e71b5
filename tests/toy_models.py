"""Tiny random Hugging Face decoder models of several architectures, for exactness tests.

``make_model(arch)`` builds a freshly initialised model (seeded) small enough that a
brute-force per-instance autograd oracle runs in milliseconds.
"""

from __future__ import annotations

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

VOCAB = 61
ARCHITECTURES = ("llama", "gpt2", "neox")


def make_model(arch: str = "llama", dtype: torch.dtype = torch.float64, seed: int = 0, lora: bool = False):
    """A tiny random causal LM of ``arch`` ('llama', 'gpt2' with tied weights, 'neox'), eager attention.

    With ``lora=True`` the model is wrapped by peft with LoRA adapters on attention and MLP
    projections (adapters initialised non-zero so their gradients are non-trivial).
    """
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, attn_implementation="eager")
    if arch == "llama":
        config = LlamaConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, **common)
        model = LlamaForCausalLM(config)
    elif arch == "gpt2":
        config = GPT2Config(n_embd=16, n_layer=2, n_head=4, n_positions=64, tie_word_embeddings=True, **common)
        model = GPT2LMHeadModel(config)
    elif arch == "neox":
        config = GPTNeoXConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                               max_position_embeddings=64, rotary_pct=0.5, tie_word_embeddings=False, **common)
        model = GPTNeoXForCausalLM(config)
    else:
        raise ValueError(f"unknown toy architecture {arch!r}; choose from {ARCHITECTURES}")
    model = model.to(dtype)
    # Random norm weights/biases so that their gradient terms are not degenerate.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "ln_" in name or "layernorm" in name.lower():
                param.add_(0.1 * torch.randn_like(param))
    if lora:
        from peft import LoraConfig, get_peft_model

        targets = {"llama": ["q_proj", "v_proj", "down_proj"], "gpt2": ["c_attn", "c_fc"],
                   "neox": ["query_key_value", "dense_4h_to_h"]}[arch]
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0,
                                                 fan_in_fan_out=arch == "gpt2", init_lora_weights=False))
    model.eval()
    return model


def perturbed_copy(model, scale: float = 0.05, seed: int = 7):
    """A copy of ``model`` with seeded Gaussian noise of size ``scale`` added to every parameter."""
    import copy

    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return other


def make_batch(batch_size: int = 4, length: int = 12, padding_side: str = "right", seed: int = 1,
               vocab: int = VOCAB) -> dict[str, torch.Tensor]:
    """A random batch with varying lengths, padding on ``padding_side`` and prompt tokens masked in labels."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.zeros(batch_size, length, dtype=torch.long)
    attention_mask = torch.zeros(batch_size, length, dtype=torch.long)
    labels = torch.full((batch_size, length), -100, dtype=torch.long)
    for i in range(batch_size):
        n = length - (i % 3) * 2  # varying real lengths
        prompt = 2 + i % 3
        ids = torch.randint(3, vocab, (n,), generator=gen)
        span = slice(0, n) if padding_side == "right" else slice(length - n, length)
        input_ids[i, span] = ids
        attention_mask[i, span] = 1
        lab = ids.clone()
        lab[:prompt] = -100
        labels[i, span] = lab
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def random_direction(model, seed: int = 2, only=None) -> dict[str, torch.Tensor]:
    """A seeded random direction for the trainable parameters (names containing ``only``, if given)."""
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
            for name, p in model.named_parameters()
            if p.requires_grad and (only is None or only in name)}


class UnigramStub(torch.nn.Module):
    """A 'language model' whose next-token distribution is a fixed table w at every position."""

    def __init__(self, vocab: int, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.log_w = torch.nn.Parameter(torch.log_softmax(torch.randn(vocab, generator=gen, dtype=torch.float64), 0))

    def forward(self, input_ids, attention_mask=None):
        logits = self.log_w.expand(*input_ids.shape, -1)
        return type("Out", (), {"logits": logits})()
