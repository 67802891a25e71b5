"""Tiny random configurations of the mixture-of-experts causal LMs the installed transformers ships.

``moe_families()`` finds every causal-LM model type whose default configuration has experts (so a
new family in a transformers upgrade shows up in the tests by itself); ``make_moe(family)`` builds
a seeded, random-initialised model of it with hidden size 16, two layers and four experts (two
per token), eager attention and the eager experts implementation (the one that runs on CPU in
float64). Generic small sizes go to the fields a configuration has; ``OVERRIDES`` holds what a
family needs beyond them (multi-head latent attention sizes, layer-type lists, ...).
"""

from __future__ import annotations

import warnings

import torch
from transformers import AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
SIZES = dict(
    hidden_size=16, intermediate_size=24, moe_intermediate_size=12, shared_expert_intermediate_size=12,
    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=4, vocab_size=61,
    num_experts=4, num_local_experts=4, n_routed_experts=4, moe_num_experts=4, num_experts_per_tok=2,
    moe_k=2, moe_topk=2, top_k_experts=2, max_position_embeddings=64, n_group=1, topk_group=1, kv_lora_rank=8,
    q_lora_rank=8, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=4, first_k_dense_replace=1,
    pad_token_id=0, bos_token_id=1, eos_token_id=2,
)
MLA = dict(num_key_value_heads=4)  # multi-head latent attention: as many key/value heads as queries
INKLING2 = dict(d_rel=4, swa_num_attention_heads=4, swa_num_key_value_heads=2, swa_head_dim=4,
                sliding_window_size=8, rel_extent=16, unpadded_vocab_size=61)
OVERRIDES: dict[str, dict] = {
    "axk1": MLA, "axk2": MLA, "deepseek_v3": MLA, "deepseek_v32": MLA, "glm4_moe_lite": MLA,
    "glm_moe_dsa": MLA, "sarvam_mla": MLA,
    "deepseek_v2": {**MLA, "n_shared_experts": 1, "num_experts_per_tok": 2},
    "dots1": {**MLA, "n_shared_experts": 1, "n_routed_experts": 4, "num_experts_per_tok": 2},
    "hunyuan_v1_moe": {"head_dim": 4},
    "lfm2_moe": {"layer_types": ["conv", "full_attention"]},
    "bailing_hybrid": {**MLA, "linear_head_dim": 4, "linear_num_heads": 4, "n_group": 1, "topk_group": 1,
                       "num_experts_per_tok": 2},
    "kimi_linear": {**MLA, "linear_head_dim": 4, "linear_num_heads": 4, "num_experts_per_tok": 2},
    "granitemoehybrid": {"mamba_n_heads": 4, "mamba_d_state": 4, "mamba_d_head": 8, "mamba_chunk_size": 8,
                         "shared_intermediate_size": 12},
    "zaya": {"num_experts_per_tok": 1, "router_hidden_size": 8},
    "inkling2_text": INKLING2,
    "inkling2_loop_text": {**INKLING2, "num_hidden_layers": 3, "layer_types": ["hybrid_sliding"] * 2 + ["hybrid"],
                           "loop_layer_index_start": 1, "loop_layer_index_end": 2, "loop_gate_rank": 4,
                           "n_layers_per_attn_res_block": 1},
    "longcat_flash": {**MLA, "num_layers": 2, "ffn_hidden_size": 24, "expert_ffn_hidden_size": 12, "moe_topk": 2,
                      "zero_expert_num": 2},
    "dots3_note_text": {**MLA, "per_layer_config": {}, "head_dim": 8, "index_topk": 4, "index_head_dim": 4,
                        "index_n_heads": 2, "shared_experts_intermediate_size": 12, "sliding_window": 8},
    "qwen4_exp_text": {"indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": 4, "indexer_budget": 8,
                       "indexer_compress_ratio": 2, "linear_key_head_dim": 4, "linear_value_head_dim": 4,
                       "linear_num_key_heads": 2, "linear_num_value_heads": 4},
    "dbrx": {"d_model": 16, "n_heads": 4, "n_layers": 2, "max_seq_len": 64,
             "ffn_config": {"ffn_hidden_size": 12, "moe_num_experts": 4, "moe_top_k": 2},
             "attn_config": {"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0}},
}


def _has_experts(values: dict) -> bool:
    """Experts in the configuration or a sub-configuration (DBRX keeps them in ``ffn_config``)."""
    return any(values.get(k) for k in EXPERT_KEYS) or any(isinstance(v, dict) and _has_experts(v)
                                                         for v in values.values())


def moe_families() -> list[str]:
    """Causal-LM model types of the installed transformers whose default configuration has experts."""
    found = []
    for family in sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = CONFIG_MAPPING[family]().to_dict()
        except Exception:  # noqa: BLE001 - a configuration that cannot be built by default is not listed
            continue
        if _has_experts(values) and "text_config" not in values:  # multimodal wrappers: see their text family
            found.append(family)
    return found


def _two_layers(kinds: list) -> list:
    """A per-layer list cut to two layers: the first kind, then the first other kind (if any)."""
    other = next((k for k in kinds if k != kinds[0]), kinds[0])
    return [kinds[0], other]


def tiny_config(family: str):
    """The family's configuration with the generic small sizes, per-layer lists cut to the two
    layers, and its overrides."""
    defaults = CONFIG_MAPPING[family]().to_dict()
    values = {k: v for k, v in SIZES.items() if defaults.get(k) is not None}
    layers = defaults.get("num_hidden_layers") or defaults.get("num_layers")
    values.update({k: _two_layers(v) for k, v in defaults.items()
                   if isinstance(v, list) and layers and len(v) == layers and k != "time_step_limit"})
    values.update(OVERRIDES.get(family, {}))
    return CONFIG_MAPPING[family](**values)


# Families whose float64 forward fails inside transformers (a float32 tensor meets a float64 one),
# tested in float32 instead.
FLOAT32 = {"inkling2_text", "inkling2_loop_text"}
# Families whose own forward depends on left padding (plain transformers gives a left-padded instance
# another loss than the same instance alone: DeepSeek-V4's compressed attention pools padded
# positions), so per-instance effects can only be compared with the oracle on right padding.
LEFT_PADDING_VARIANT = {"deepseek_v4"}
MAX_PARAMETERS = 1_000_000  # a configuration the sizes did not shrink is refused before it is built


def make_moe(family: str, dtype: torch.dtype = torch.float64, seed: int = 0):
    """A seeded random tiny model of ``family`` in ``dtype``, eval mode, eager attention and experts."""
    config = tiny_config(family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            size = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        if size > MAX_PARAMETERS:
            raise ValueError(f"the tiny {family} configuration still has {size} parameters; shrink it in OVERRIDES")
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", experts_implementation="eager")
    model = model.to(dtype).eval()
    with torch.no_grad():  # random norm weights, so that their gradient terms are not degenerate
        for name, param in model.named_parameters():
            if "norm" in name.lower() and param.dim() == 1:
                param.add_(0.1 * torch.randn_like(param))
    return model
