"""G-effect studies of Reveal and Release: module effects against an autograd oracle, the mismatch table."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from toy_models import VOCAB, make_model

from geffect.procedures.studies import data_mismatch, module_deltas, module_effects
from geffect.training.stacking import activate


def stacked_toy():
    base = make_model("llama", torch.float64, seed=0)
    lora = dict(r=2, lora_alpha=4, target_modules=["q_proj", "down_proj"], init_lora_weights=False)
    model = get_peft_model(base, LoraConfig(**lora), adapter_name="stack0")
    model.add_adapter("default", LoraConfig(**lora))
    activate(model, ["stack0"], trainable="default")
    return model.to(torch.float64)


def batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (3, 7), generator=g)
    labels = ids.clone()
    labels[:, :2] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def oracle(model, probe, adapter):
    """Σ_W <∇_W mean_i R_i, scaling·B A> per layer group, by autograd on the base weights."""
    values = {}
    for path, module in model.named_modules():
        if hasattr(module, "lora_A") and isinstance(module.lora_A, torch.nn.ModuleDict) and adapter in module.lora_A:
            weight = module.base_layer.weight
            weight.requires_grad_(True)
            logits = model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), probe["labels"][:, 1:],
                                                    reduction="none", ignore_index=-100)
            mask = probe["labels"][:, 1:] != -100
            risk = ((nll * mask).sum(1) / mask.sum(1)).mean()
            (grad,) = torch.autograd.grad(risk, weight)
            weight.requires_grad_(False)
            delta = module.scaling[adapter] * module.lora_B[adapter].weight @ module.lora_A[adapter].weight
            layer = f"block.{path.split('layers.')[1].split('.')[0]}"
            values[layer] = values.get(layer, 0.0) + float((grad * delta).sum())
    return values


def test_module_deltas_are_scaled_b_times_a():
    model = stacked_toy()
    deltas = module_deltas(model, "stack0")
    name = next(iter(deltas))
    module = model.get_submodule(name.rsplit(".base_layer.weight", 1)[0])
    expected = module.scaling["stack0"] * module.lora_B["stack0"].weight @ module.lora_A["stack0"].weight
    torch.testing.assert_close(deltas[name], expected)
    with pytest.raises(ValueError, match="no LoRA module"):
        module_deltas(model, "nope")


def test_module_effects_match_the_autograd_oracle_and_keep_trainable_flags(assert_rel_close):
    model = stacked_toy()
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    probes = {"a": batch(1), "b": batch(2)}
    table = module_effects(model, probes)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert set(table["module"]) == {"stack0", "default"}
    for adapter in ("stack0", "default"):
        for probe, data in probes.items():
            expected = oracle(model, data, adapter)
            got = table[(table["module"] == adapter) & (table["probe"] == probe)].set_index("layer")["value"]
            layers = list(expected)
            assert_rel_close([got[k] for k in layers], [expected[k] for k in layers], 1e-6)  # norms in float32
            assert set(got.index) == set(layers)  # only layers holding LoRA-wrapped weights


def test_data_mismatch_averages_each_runs_probe_effects(ga, wga):
    table = data_mismatch({"self": ga, "true": wga}, probe="forget")
    effects = ga.effects
    part = effects[(effects["probe"] == "forget") & (effects["direction"] == "gradient")]
    layer = part["layer"].iloc[0]
    per_step = part[part["layer"] == layer].groupby("step")["value"].mean()
    row = table[(table["run"] == "self") & (table["layer"] == layer)]
    assert float(row["value"].iloc[0]) == pytest.approx(per_step.mean())
    assert set(table["run"]) == {"self", "true"}
    with pytest.raises(ValueError, match="no gradient effects on probe 'nowhere'"):
        data_mismatch({"self": ga}, probe="nowhere")
