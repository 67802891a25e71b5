"""The ``probe_directions`` companion in the trainer: probes fitted on the training splits before the first
step, cached in the run directory with their accuracies, reused on resume, handed to the objective."""

from __future__ import annotations

import logging

import pytest
import torch
from test_training_support import toy_load, use_toy_model

from geffect.cli import main
from geffect.objectives import get_objective
from geffect.objectives.probe_directions import ProbeDirections, fit_probe_directions
from geffect.tasks import TaskData
from geffect.training.config import UnlearnConfig
from geffect.training.data import UnlearningData
from geffect.training.probing import ProbeFitting, read_probe_accuracy
from geffect.training.trainer import Trainer

SMALL = dict(forget="forget01", batch_size=4, probe_size=3, steps=4, seed=5, lr=1e-2, checkpoint_every=2)


def test_probes_fitted_before_training_cached_and_logged(tmp_path, monkeypatch, caplog):
    use_toy_model(monkeypatch)
    config = UnlearnConfig(objective="probe_directions", hparams={"probe_rows": 12}, **SMALL).resolved()
    with caplog.at_level(logging.INFO, logger="geffect"):
        run = Trainer(config, tmp_path / "run", progress=False).run()
    assert run.status == "finished"
    accuracy = read_probe_accuracy(run.path)
    assert accuracy["layer"].tolist() == ["block.0", "block.1"]
    assert accuracy["rows"].eq(24).all() and accuracy["train"].between(0.5, 1.0).all()
    assert "probe accuracy" in caplog.text
    cached = ProbeDirections.load(run.path / "probe_directions")
    # the same probes, refitted independently from the model before unlearning and the training rows
    model, tokenizer = toy_load()
    data = UnlearningData(tokenizer, TaskData(), "forget01", "retain99", seed=5, batch_size=4)
    toxic = [data.forget_batch(d) for d in range(3)]
    clean = [data.retain_batch(d) for d in range(3)]
    expected = fit_probe_directions(model, toxic, clean, [0, 1], l2=1e-3, holdout=0.2, seed=5)
    assert torch.allclose(cached.weight, expected.weight) and cached.accuracy == expected.accuracy
    history = run.history
    assert {"loss_forget", "loss_retain", "loss_forget_block.0", "loss_forget_block.1"} <= set(history.columns)


def test_probes_reloaded_from_the_run_directory(tmp_path, monkeypatch):
    use_toy_model(monkeypatch)
    spec = get_objective("probe_directions")
    probing = ProbeFitting(spec, spec.hparams())
    with pytest.raises(RuntimeError, match="before prepare"):
        probing.fit(toy_load()[0])
    model, tokenizer = toy_load()
    hand = ProbeDirections([0, 1], torch.ones(2, model.config.hidden_size, dtype=torch.float64),
                           torch.zeros(2, dtype=torch.float64), {"block.0": {"train": 0.5}})
    hand.save(tmp_path / "probe_directions")
    from geffect.training.companions import CompanionContext

    data = UnlearningData(tokenizer, TaskData(), "forget01", "retain99", seed=5, batch_size=4)
    probing.prepare(data)
    probing.start(CompanionContext(model, run_dir=tmp_path))
    assert torch.equal(probing.objective_kwargs()["probes"].weight, hand.weight)


def test_unlearn_cli_runs_each_new_objective(tmp_path, monkeypatch, capsys):
    use_toy_model(monkeypatch)
    for name, hparams in (("cosine_rmu", []), ("meta_cosine_rmu", ["--hparam", "val_size=4", "--hparam", "every=2"]),
                          ("probe_directions", ["--hparam", "probe_rows=8", "--hparam", "single_layer=1"])):
        code = main(["unlearn", "--objective", name, "--forget", "forget01", "--steps", "2", "--batch-size", "4",
                     "--probe-size", "2", "--out", str(tmp_path / name), "--no-progress", *hparams])
        assert code == 0, name
    assert "weight_retain" in __import__("pandas").read_parquet(tmp_path / "meta_cosine_rmu" / "history.parquet")
    assert (tmp_path / "probe_directions" / "probe_directions.json").is_file()
    assert main(["objectives"]) == 0
    listing = capsys.readouterr().out
    for name in ("cosine_rmu", "meta_cosine_rmu", "probe_directions"):
        assert any(line.startswith(name + " ") and "interpretation" in line for line in listing.splitlines())
    assert main(["unlearn", "--objective", "meta_cosine_rmu", "--forget", "forget01", "--steps", "1",
                 "--hparam", "controller=adam", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "unknown weight controller 'adam'" in capsys.readouterr().err


# ------------------------------------------------------------------------------ Hugging Face Trainer
class Indices(torch.utils.data.Dataset):
    def __init__(self, size):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        return i


def train_hf(tmp_path, objective, hparams, steps=4):
    from transformers import Trainer, TrainingArguments

    from geffect.training.data import Encoder
    from geffect.training.objective_callback import ObjectiveCallback

    model, tokenizer = toy_load()
    world = __import__("geffect.data", fromlist=["load_world"]).load_world()
    callback = ObjectiveCallback(objective, forget=world["forget01"], retain=list(world["retain99"].select(range(60))),
                                 tokenizer=tokenizer, hparams=hparams, batch_size=4, out=tmp_path / "out")
    encoder = Encoder(tokenizer)
    forget_rows, retain_rows = callback.forget_rows, callback.retain_rows

    def collate(indices):
        pick = lambda rows: encoder.batch([rows[i % len(rows)] for i in indices])  # noqa: E731
        return {"forget": pick(forget_rows), "retain": pick(retain_rows)}

    class Unlearner(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            return callback.loss(model, inputs["forget"], inputs["retain"])

    args = TrainingArguments(output_dir=str(tmp_path / "hf"), per_device_train_batch_size=4, max_steps=steps,
                             learning_rate=1e-2, optim="sgd", lr_scheduler_type="constant", report_to=[],
                             save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
                             dataloader_num_workers=0, remove_unused_columns=False)
    Unlearner(model=model, args=args, train_dataset=Indices(64), data_collator=collate, callbacks=[callback]).train()
    return callback


@pytest.mark.parametrize("rule", ["hypergradient", "bandit"])
def test_objective_callback_learns_weights_in_a_hf_trainer(tmp_path, rule):
    callback = train_hf(tmp_path, "meta_cosine_rmu", {"controller": rule, "every": 1, "val_size": 4, "layer": 0,
                                                      "grid": [0.5, 2.0]})
    history = callback.history
    assert history["step"].tolist() == [0, 1, 2, 3]
    assert history["meta_objective"].notna().all() and len(callback.forget_rows) == 20 - 4  # forget01: 20 rows
    if rule == "bandit":
        assert history["weight_retain"].tolist()[:2] == [0.5, 2.0]
    else:
        assert (history["weight_forget"] + history["weight_retain"]).round(9).eq(2.0).all()
    saved = __import__("pandas").read_parquet(tmp_path / "out" / "companion_history.parquet")
    assert saved.equals(history)


def test_objective_callback_fits_probes_in_a_hf_trainer(tmp_path):
    callback = train_hf(tmp_path, "probe_directions", {"probe_rows": 8}, steps=2)
    assert read_probe_accuracy(tmp_path / "out")["rows"].eq(16).all()
    assert callback.companion.objective_kwargs()["probes"].layers == [0, 1]


@pytest.mark.slow
def test_diagnose_runs_the_companions(tmp_path, monkeypatch):
    import geffect

    use_toy_model(monkeypatch)
    settings = dict(forget="forget01", steps=2, batch_size=4, probe_size=2, progress=False)
    geffect.diagnose("meta_cosine_rmu", baselines=(), out=tmp_path / "meta", hparams={"val_size": 4, "every": 1},
                     **settings)
    history = geffect.Run(tmp_path / "meta" / "runs" / "meta_cosine_rmu").history
    assert history["meta_objective"].notna().all() and "weight_retain" in history
    geffect.diagnose("probe_directions", baselines=(), out=tmp_path / "probe", hparams={"probe_rows": 8}, **settings)
    assert read_probe_accuracy(tmp_path / "probe" / "runs" / "probe_directions")["rows"].eq(16).all()
