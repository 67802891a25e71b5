"""O-LoRA: the orthogonality penalty against hand-computed values, and stacked LoRA runs."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

import geffect
from geffect.objectives.orthogonal import lora_down_projections, orthogonality_penalty
from geffect.training import ConfigError, UnlearnConfig
from geffect.training.stacking import activate, stack_lora

# A_j for two earlier modules and A_i for the training one (rank 2, width 4), written out by hand.
EARLIER = [torch.tensor([[1.0, -2.0, 0.0, 0.0], [0.0, 1.0, 3.0, 0.0]]),
           torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])]
CURRENT = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, -1.0]])
# A_0 A_iᵀ = [[-1, 0], [1, 6]]   -> Σ|·| = 8,  Σ(·)² = 38
# A_1 A_iᵀ = [[0, -1], [1, 0]]   -> Σ|·| = 2,  Σ(·)² = 2
# two wrapped modules (q_proj, v_proj) hold the same matrices: totals 2·(8+2) = 20 and 2·(38+2) = 80


def stacked_toy():
    config = LlamaConfig(hidden_size=4, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
                         num_key_value_heads=1, vocab_size=11, max_position_embeddings=16, head_dim=4)
    torch.manual_seed(0)
    lora = dict(r=2, lora_alpha=2, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(**lora), adapter_name="stack0")
    model.add_adapter("stack1", LoraConfig(**lora))
    model.add_adapter("default", LoraConfig(**lora))
    activate(model, ["stack0", "stack1"], trainable="default")
    with torch.no_grad():
        for _, module in model.named_modules():
            if hasattr(module, "lora_A") and isinstance(module.lora_A, torch.nn.ModuleDict) and module.lora_A:
                module.lora_A["stack0"].weight.copy_(EARLIER[0])
                module.lora_A["stack1"].weight.copy_(EARLIER[1])
                module.lora_A["default"].weight.copy_(CURRENT)
    return model


def test_penalty_matches_hand_computed_values():
    model = stacked_toy()
    assert len(list(lora_down_projections(model))) == 2
    assert float(orthogonality_penalty(model).detach()) == pytest.approx(20.0)
    assert float(orthogonality_penalty(model, squared=True).detach()) == pytest.approx(80.0)


def test_penalty_gradient_reaches_only_the_training_module():
    model = stacked_toy()
    orthogonality_penalty(model).backward()
    for _, current, earlier in lora_down_projections(model):
        # d/dA_i Σ|A_j A_iᵀ| = Σ_j sign(A_j A_iᵀ)ᵀ A_j
        expected = sum(torch.sign(a @ CURRENT.T).T @ a for a in EARLIER)
        torch.testing.assert_close(current.grad, expected)
        assert all(w.grad is None for w in earlier)


def test_olora_objective_adds_the_weighted_penalty():
    model = stacked_toy()
    batch = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones(1, 3, dtype=torch.long),
             "labels": torch.tensor([[-100, 2, 3]])}
    out = geffect.get_objective("olora")(model, batch, retain=batch, ref_model=model, base="ga", lambda1=0.25)
    base = geffect.get_objective("ga")(model, batch)
    assert float(out.parts["orthogonality"]) == pytest.approx(20.0)
    assert float(out.loss) == pytest.approx(float(base.loss) + 0.25 * 20.0)


def test_first_module_has_no_penalty():
    model = get_peft_model(LlamaForCausalLM(LlamaConfig(hidden_size=4, intermediate_size=8, num_hidden_layers=1,
                                                        num_attention_heads=1, vocab_size=11, head_dim=4)),
                           LoraConfig(r=2, target_modules=["q_proj"]))
    assert float(orthogonality_penalty(model).detach()) == 0.0


def test_lora_stack_needs_lora():
    with pytest.raises(ConfigError, match="lora_stack"):
        UnlearnConfig(lora_stack=["somewhere"]).validate()


@pytest.mark.slow
def test_stacking_keeps_earlier_modules_unchanged(tmp_path):
    settings = dict(model="tiny", forget="forget01", steps=2, lr=1e-2, batch_size=4, probe_size=4,
                    lora={"r": 4, "target_modules": ["q_proj", "v_proj"]}, progress=False)
    first = geffect.unlearn("npo_gd", out=tmp_path / "one", **settings)
    second = geffect.unlearn("olora", out=tmp_path / "two", lora_stack=["../one"], **settings)
    assert second.history["loss_orthogonality"].iloc[0] > 0
    one = dict(first.model.named_parameters())
    two = dict(second.model.named_parameters())
    stacked = [n for n in two if ".stack0." in n]
    assert stacked and all(not two[n].requires_grad for n in stacked)
    for name in stacked:  # the earlier module is bit-for-bit the first run's
        assert torch.equal(two[name], one[name.replace(".stack0.", ".default.")])
    trained = [n for n in two if ".lora_B.default." in n]
    assert any(two[n].abs().sum() > 0 for n in trained)  # the new module trained (B starts at zero)
    # the stacked model without its own module is the first run's model
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        expected = first.model(input_ids=ids).logits
        base = stack_lora(geffect.load_model("tiny")[0], ["../one"], tmp_path / "two", "tiny")
        torch.testing.assert_close(base(input_ids=ids).logits, expected)
