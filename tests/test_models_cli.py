"""The ``geffect build-world`` and ``geffect demo`` sub-commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from geffect.cli import main
from geffect.data import read_manifest
from geffect.data.task_store import default_tasks_dir
from geffect.evaluation.classifier import BagOfWordsClassifier
from geffect.evaluation.scorers import scorers_dir


def test_build_world_only_writes_the_default_world_tasks_and_scorers(tmp_path: Path, capsys) -> None:
    folders = {name: tmp_path / name for name in ("world", "tasks", "scorers")}
    assert main(["build-world", "--world-only", *(f"--{n}-dir={p}" for n, p in folders.items())]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["world"] == read_manifest(folders["world"])["content_hash"] == read_manifest()["content_hash"]
    for task, digest in printed["tasks"].items():  # the shipped data is what the default build writes
        assert digest == read_manifest(default_tasks_dir() / task)["content_hash"], task
    for name, entry in printed["scorers"].items():
        shipped = BagOfWordsClassifier.load(scorers_dir() / f"{name}.json")
        rebuilt = BagOfWordsClassifier.load(folders["scorers"] / f"{name}.json")
        assert rebuilt.vocabulary == shipped.vocabulary
        assert np.allclose(rebuilt.weights, shipped.weights, atol=1e-4) and abs(rebuilt.bias - shipped.bias) < 1e-4
        assert entry["heldout_accuracy"] == shipped.info["heldout_accuracy"] >= 0.95


def test_build_world_rejects_unknown_models(capsys) -> None:
    assert main(["build-world", "--models", "tiny,huge"]) == 2
    assert "unknown model(s) huge" in capsys.readouterr().err


def test_build_world_passes_label_smoothing_and_rejects_a_bad_one(monkeypatch, capsys) -> None:
    import geffect.models

    seen = {}

    def fake_build(out_root, **kwargs):
        seen.update(kwargs)
        return {"models": {}, "wall_seconds": 0.0, "cpu_seconds": 0.0, "total_bytes": 0}

    monkeypatch.setattr(geffect.models, "build_world_models", fake_build)
    assert main(["build-world", "--label-smoothing", "0"]) == 0
    assert seen["train_config"].label_smoothing == 0.0
    assert main(["build-world", "--smoothing-prior", "bigram"]) == 0
    assert seen["train_config"].label_smoothing == 0.2 and seen["train_config"].smoothing_prior == "bigram"
    assert main(["build-world"]) == 0
    assert seen["train_config"].label_smoothing == 0.2 and seen["train_config"].smoothing_prior == "uniform"
    assert main(["build-world", "--label-smoothing", "1.5"]) == 2
    assert "--label-smoothing must be in [0, 1), got 1.5" in capsys.readouterr().err
    assert main(["build-world", "--smoothing-prior", "unigram"]) == 2
    assert "smoothing_prior must be one of uniform, bigram, got 'unigram'" in capsys.readouterr().err


def test_demo_runs_a_study_and_writes_the_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--objectives", "ga,npo", "--steps", "2",
                 "--eval-examples", "4"]) == 0
    printed = capsys.readouterr().out
    page = out / "report.html"
    assert page.is_file() and str(page.resolve()) in printed
    assert printed.count("forget ROUGE-L") == 2
    assert printed.count("first-step forget G-effect") == 2
    html = page.read_text()
    assert "npo" in html and "ga" in html and "data:image/png;base64" in html
    assert (out / "runs" / "ga" / "config.yaml").is_file()


def test_demo_rejects_unknown_objectives(capsys) -> None:
    assert main(["demo", "--objectives", "ga,nope"]) == 2
    assert "unknown objective 'nope'" in capsys.readouterr().err


def test_demo_reports_a_missing_model(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("GEFFECT_DATA", str(tmp_path))
    assert main(["demo", "--out", str(tmp_path / "out"), "--steps", "1", "--eval-examples", "0"]) == 2
    assert "build-world" in capsys.readouterr().err
