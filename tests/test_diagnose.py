"""``geffect.diagnose``: loading a user's objective, the dry-call checks, and a short real diagnosis.

The real run diagnoses a hand-written gradient ascent (its NLL computed here from the logits,
not with geffect's terms) beside the built-in ``ga``: with the same seed and settings both
runs see the same batches, so their recorded G-effects must agree, which checks that the
user's function went through the same trainer path as the baselines.
"""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import geffect  # noqa: E402
from geffect.cli import main  # noqa: E402
from geffect.objectives import ObjectiveOutput  # noqa: E402
from geffect.objectives.terms import sequence_nll  # noqa: E402
from geffect.reporting.new_objective import ObjectiveError, check_objective, load_objective  # noqa: E402

HAND_GA = textwrap.dedent('''
    """A user's objective file: gradient ascent written without geffect's helpers."""
    import torch

    from geffect.objectives import ObjectiveOutput


    def hand_ga(model, forget):
        logits = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"]).logits
        labels = forget["labels"][:, 1:]
        mask = labels != -100
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        nll = -(picked * mask).sum(dim=1) / mask.sum(dim=1)
        return ObjectiveOutput(loss=-nll.mean(), parts={"forget": -nll.mean()}, per_instance=-nll)


    def not_a_function_either():
        return 3


    LIMIT = 3
''')

# Shared by every run of the real diagnosis (and by the CLI call, so the baseline is reused).
SETTINGS = dict(forget="forget10", steps=2, probe_size=4, batch_size=4, lr=1e-3)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A freshly initialised 2-block Llama with the world tokenizer, saved as an HF directory."""
    from transformers import LlamaForCausalLM

    from geffect.data import load_world, train_tokenizer, world_texts
    from geffect.models import tiny_config

    folder = tmp_path_factory.mktemp("model")
    tokenizer = train_tokenizer(world_texts(load_world()), vocab_size=512, out_dir=folder)
    torch.manual_seed(0)
    config = tiny_config(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         attn_implementation="eager")
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "my_objectives.py"
    path.write_text(HAND_GA)
    return path


# -- loading ------------------------------------------------------------------------------------------


def test_load_objective_from_a_file(user_file):
    fn = load_objective(f"{user_file}:hand_ga")
    assert fn.__name__ == "hand_ga" and fn.__module__.endswith("my_objectives")
    assert load_objective("npo") is geffect.get_objective("npo").fn
    assert load_objective("geffect.objectives.likelihood:wga") is geffect.get_objective("wga").fn


@pytest.mark.parametrize("ref, expected", [
    ("{file}:missing", "has no 'missing'; functions defined there: hand_ga, not_a_function_either"),
    ("{file}:LIMIT", "is a int, not a function"),
    ("{dir}/absent.py:fn", "no such Python file"),
    ("no_such_objective", "neither 'path/to/module.py:function'"),
    ("geffect_no_such_module:fn", "cannot import module 'geffect_no_such_module'"),
])
def test_load_objective_errors_say_what_is_missing(user_file, ref, expected):
    with pytest.raises(ObjectiveError, match="^") as info:
        load_objective(ref.format(file=user_file, dir=user_file.parent))
    assert expected in str(info.value)


def test_a_file_that_fails_to_import_is_reported(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import math\nx = 1 / 0\n")
    with pytest.raises(ObjectiveError, match=r"importing .*broken.py' failed: ZeroDivisionError"):
        load_objective(f"{path}:anything")


# -- the dry-call checks --------------------------------------------------------------------------------


def returns_tensor(model, forget):
    return sequence_nll(model, forget).mean()


def returns_dict(model, forget):
    return {"loss": sequence_nll(model, forget).mean()}


def vector_loss(model, forget):
    return ObjectiveOutput(loss=-sequence_nll(model, forget))


def nan_loss(model, forget):
    return ObjectiveOutput(loss=sequence_nll(model, forget).mean() * float("nan"))


def nan_part(model, forget):
    loss = -sequence_nll(model, forget).mean()
    return ObjectiveOutput(loss=loss, parts={"ratio": torch.tensor(float("inf"))})


def raises_inside(model, forget):
    scale = len(forget["labels"]) // 0
    return ObjectiveOutput(loss=scale * sequence_nll(model, forget).mean())


def detached_loss(model, forget):
    with torch.no_grad():
        return ObjectiveOutput(loss=-sequence_nll(model, forget).mean())


def zero_gradient(model, forget):
    return ObjectiveOutput(loss=0.0 * sequence_nll(model, forget).mean())


def bad_per_instance(model, forget):
    nll = sequence_nll(model, forget)
    return ObjectiveOutput(loss=-nll.mean(), per_instance=-nll[:1])


def wrong_signature(net, batch):
    return ObjectiveOutput(loss=-sequence_nll(net, batch).mean())


def hparam_without_default(model, forget, beta):
    return ObjectiveOutput(loss=-beta * sequence_nll(model, forget).mean())


def fine(model, forget, retain, scale: float = 2.0):
    return ObjectiveOutput(loss=scale * sequence_nll(model, retain).mean() - sequence_nll(model, forget).mean())


@pytest.mark.parametrize("fn, expected", [
    (returns_tensor, "returned a bare () tensor; expected an ObjectiveOutput"),
    (returns_dict, "returned dict; expected an ObjectiveOutput"),
    (vector_loss, "ObjectiveOutput.loss must be a scalar (0-dim) tensor, got a tensor of shape (4,)"),
    (nan_loss, "the loss is nan at step 0"),
    (nan_part, "loss part 'ratio' is inf at step 0"),
    (raises_inside, "raised ZeroDivisionError on the first forget batch: integer division or modulo by zero"),
    (detached_loss, "does not depend on the model's trainable parameters"),
    (zero_gradient, "the gradient is exactly zero at step 0"),
    (bad_per_instance, "per_instance must be a tensor of shape (4,)"),
    (wrong_signature, "the first two parameters must be (model, forget), got ['net', 'batch']"),
    (hparam_without_default, "hyper-parameter 'beta' needs a default value"),
])
def test_each_problem_is_reported_with_the_function_name(model_dir, fn, expected):
    with pytest.raises(ObjectiveError) as info:
        check_objective(fn, model=str(model_dir), forget="forget10", batch_size=4)
    message = str(info.value)
    assert f"'{fn.__name__}'" in message, message
    assert expected in message, message


def test_unknown_hparam_is_reported(model_dir):
    with pytest.raises(ObjectiveError, match="'fine' has no hyper-parameter"):
        check_objective(fine, model=str(model_dir), hparams={"sclae": 1.0})


def test_a_good_objective_passes_with_its_loss(model_dir):
    loss = check_objective(fine, model=str(model_dir), forget="forget10", batch_size=4, hparams={"scale": 0.0})
    nll = check_objective(returns_nll, model=str(model_dir), forget="forget10", batch_size=4)
    assert loss == pytest.approx(-nll, rel=1e-5)  # scale 0 leaves minus the forget NLL
    assert 3.0 < nll < 10.0  # a random model over a ~512-token vocabulary: NLL near log(512) = 6.2


def returns_nll(model, forget):
    return ObjectiveOutput(loss=sequence_nll(model, forget).mean())


def test_validation_happens_before_any_run(model_dir, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(geffect, "unlearn", lambda *a, **k: calls.append(a))
    with pytest.raises(ObjectiveError, match="'nan_loss'"):
        geffect.diagnose(nan_loss, model=str(model_dir), out=tmp_path / "d", progress=False, **SETTINGS)
    assert calls == [] and not (tmp_path / "d").exists()


def test_cli_reports_a_bad_objective_in_one_line(model_dir, tmp_path, capsys):
    path = tmp_path / "bad.py"
    path.write_text("def broken(model, forget):\n    return 1.0\n")
    code = main(["diagnose", f"{path}:broken", "--model", str(model_dir), "--steps", "1",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("geffect diagnose: error: objective 'broken' returned float; expected an "
                               "ObjectiveOutput")


# -- a real diagnosis -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_diagnose_runs_beside_baselines_and_reports(model_dir, user_file, tmp_path, capsys):
    out = tmp_path / "diag"
    fn = load_objective(f"{user_file}:hand_ga")
    path = geffect.diagnose(fn, baselines=("ga",), model=str(model_dir), out=out, progress=False, **SETTINGS)
    assert path == out / "report.html" and path.is_file()
    page = path.read_text()
    assert "diagnose hand_ga vs ga" in page and "data:image/png;base64," in page
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["run"]) == ["hand_ga", "ga"]

    mine, base = geffect.Run(out / "runs" / "hand_ga"), geffect.Run(out / "runs" / "ga")
    assert mine.status == base.status == "finished"
    keys = ["step", "probe", "instance", "layer", "direction"]
    a = mine.effects.sort_values(keys).reset_index(drop=True)
    b = base.effects.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[keys], b[keys])
    assert len(a) == 2 * 2 * 4 * 5 * 2  # steps x probes x instances x groups (embed, 2 blocks, norm, head) x dirs
    scale = np.abs(b["value"]).max()
    assert scale > 0 and np.abs(a["value"] - b["value"]).max() <= 1e-4 * scale
    # the dry call sees the trainer's first batch: its loss is the run's loss at step 0
    dry = check_objective(fn, model=str(model_dir), **SETTINGS)
    assert dry == pytest.approx(mine.history["loss"].iloc[0], rel=1e-5)

    # the CLI on the same folder reuses the finished baseline and retrains the new objective
    stamp = (out / "runs" / "ga" / "run.json").stat().st_mtime_ns
    mine_stamp = (out / "runs" / "hand_ga" / "run.json").stat().st_mtime_ns
    code = main(["diagnose", f"{user_file}:hand_ga", "--baselines", "ga", "--model", str(model_dir),
                 "--forget", "forget10", "--steps", "2", "--probe-size", "4", "--batch-size", "4",
                 "--lr", "0.001", "--out", str(out), "--no-progress"])
    assert code == 0
    assert capsys.readouterr().out.strip().endswith("report.html")
    assert (out / "runs" / "ga" / "run.json").stat().st_mtime_ns == stamp
    assert (out / "runs" / "hand_ga" / "run.json").stat().st_mtime_ns != mine_stamp


def test_epochs_replace_the_default_steps_and_settings_are_shared(model_dir, tmp_path, monkeypatch):
    calls = []

    def fake_unlearn(objective, out, **kwargs):
        calls.append((objective, kwargs))
        raise RuntimeError("stop after the first run")

    monkeypatch.setattr(geffect, "unlearn", fake_unlearn)
    with pytest.raises(ObjectiveError, match="'fine' failed while unlearning .* stop after the first run"):
        geffect.diagnose(fine, model=str(model_dir), out=tmp_path / "d", epochs=0.5, batch_size=4,
                         hparams={"scale": 0.5}, progress=False)
    (objective, kwargs), = calls
    assert objective is fine and "steps" not in kwargs
    assert kwargs == {"model": str(model_dir), "epochs": 0.5, "batch_size": 4,
                      "hparams": {"scale": 0.5}, "progress": False}
