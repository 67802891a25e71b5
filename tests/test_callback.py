"""GEffectCallback inside a Hugging Face Trainer: same records, values equal an independent oracle."""

from __future__ import annotations

import gc

import pytest
import torch
from test_training_support import oracle_values, toy_model, world_tokenizer
from transformers import Trainer, TrainerCallback, TrainingArguments

from geffect.data import collate, encode_qa, load_world
from geffect.training.callback import GEffectCallback


class Rows(torch.utils.data.Dataset):
    def __init__(self, examples):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]


def train_with_callback(out, more_callbacks=(), **extra):
    """Three SGD steps of a HF Trainer on the toy model with the callback recording two probes."""
    tokenizer = world_tokenizer()
    world = load_world()
    train = [encode_qa(tokenizer, r["question"], r["answer"]) for r in world["forget01"].select(range(4))]
    probes = {"forget": list(world["forget01"].select(range(4, 7))), "retain": list(world["retain99"].select(range(3)))}
    model = toy_model()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    callback = GEffectCallback(probes, out=out / "records", tokenizer=tokenizer)
    args = TrainingArguments(output_dir=str(out / "hf"), per_device_train_batch_size=4, max_steps=3, learning_rate=0.5,
                             optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0, report_to=[],
                             save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
                             dataloader_num_workers=0, **extra)
    trainer = Trainer(model=model, args=args, train_dataset=Rows(train), callbacks=[callback, *more_callbacks],
                      data_collator=lambda examples: collate(examples, tokenizer))
    trainer.train()
    return callback, start, train, probes


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_with_callback(tmp_path_factory.mktemp("callback"))


def test_callback_writes_the_record_tables(trained):
    callback, *_ = trained
    effects, risks, history = callback.effects, callback.risks, callback.history
    # 3 steps x 2 probes x 3 instances x 5 groups x 2 directions
    assert len(effects) == 3 * 2 * 3 * 5 * 2
    assert sorted(effects["step"].unique()) == [0, 1, 2]
    assert set(effects["direction"]) == {"gradient", "update"}
    assert len(risks) == 3 * 2 * 3 and risks["risk_after"].notna().all()
    assert history["step"].tolist() == [0, 1, 2] and history["lr"].eq(0.5).all()
    # the risk after a step is the risk before the next one
    forget = risks[risks.probe == "forget"].sort_values(["instance", "step"])
    for _, frame in forget.groupby("instance"):
        assert frame["risk"].to_numpy()[1:] == pytest.approx(frame["risk_after"].to_numpy()[:-1], rel=1e-6)


def test_first_step_gradient_effect_matches_the_oracle(trained):
    callback, start, train, probes = trained
    model = toy_model()
    model.load_state_dict(start)
    batch = collate(train, world_tokenizer())  # one batch = the whole 4-example dataset
    loss = model(**batch).loss  # the Trainer's loss: HF token mean over the batch
    names = [n for n, _ in model.named_parameters()]
    grads = dict(zip(names, torch.autograd.grad(loss, list(model.parameters()))))
    recorded = callback.effects.query("step == 0 and direction == 'gradient' and probe == 'forget'")
    groups = list(recorded["layer"].unique())
    probe_batch = collate([encode_qa(world_tokenizer(), r["question"], r["answer"]) for r in probes["forget"]],
                          world_tokenizer())
    expected = oracle_values(model, probe_batch, grads, groups)
    got = torch.tensor(recorded["value"].to_numpy()).reshape(3, len(groups))
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-9) and expected.abs().max() > 1e-6
    # SGD without momentum: the update effect is -lr x the gradient effect
    update = callback.effects.query("step == 0 and direction == 'update' and probe == 'forget'")["value"]
    assert torch.allclose(torch.tensor(update.to_numpy()), -0.5 * got.reshape(-1), rtol=1e-4, atol=1e-9)


def test_gradient_checkpointing_gives_the_same_records(trained, tmp_path):
    """HF checkpointing (which may make the embedding output require grad) changes no recorded value."""
    checkpointed, *_ = train_with_callback(tmp_path, gradient_checkpointing=True)
    keys = ["step", "probe", "instance", "layer", "direction"]
    plain = trained[0].effects.set_index(keys)["value"].sort_index()
    other = checkpointed.effects.set_index(keys)["value"].sort_index()
    assert plain.index.equals(other.index)
    assert torch.allclose(torch.tensor(other.to_numpy()), torch.tensor(plain.to_numpy()), rtol=1e-5, atol=1e-9)


class FreezeWatch(TrainerCallback):
    """Notes gc.get_freeze_count() at the end of every step."""

    def __init__(self):
        self.counts = []

    def on_step_end(self, args, state, control, **kwargs):
        self.counts.append(gc.get_freeze_count())


def test_the_heap_is_frozen_during_training_and_unfrozen_after(tmp_path):
    assert gc.get_freeze_count() == 0
    watch = FreezeWatch()
    train_with_callback(tmp_path, more_callbacks=[watch])
    assert len(watch.counts) == 3 and min(watch.counts) > 0
    assert gc.get_freeze_count() == 0
