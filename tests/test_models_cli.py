"""The ``geffect build-world`` and ``geffect demo`` sub-commands."""

from __future__ import annotations

import json
from pathlib import Path

from geffect.cli import main
from geffect.data import read_manifest


def test_build_world_only_writes_the_default_world(tmp_path: Path, capsys) -> None:
    assert main(["build-world", "--world-only", "--world-dir", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["content_hash"] == read_manifest(tmp_path)["content_hash"] == read_manifest()["content_hash"]
    assert printed["sizes"]["full"] == 2000


def test_build_world_rejects_unknown_models(capsys) -> None:
    assert main(["build-world", "--models", "tiny,huge"]) == 2
    assert "unknown model(s) huge" in capsys.readouterr().err


def test_demo_prints_splits_model_and_answers(capsys) -> None:
    assert main(["demo", "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert "forget10" in out and "world_facts" in out and "parameters" in out
    assert out.count("ROUGE-L recall") == 3


def test_demo_reports_a_missing_model(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("GEFFECT_DATA", str(tmp_path))
    assert main(["demo"]) == 2
    assert "build-world" in capsys.readouterr().err
